"""Every workflow in workflows/, validated and executed by a real ComfyUI server (``POST /prompt``) on tiny
models, and node errors as the server reports them.

The only stand-in is the browser's part: a UI-format workflow (what drag-and-drop loads) becomes an
API-format prompt with ``comfy_host.to_api_prompt``, using the server's own ``/object_info``.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from urllib.parse import quote

import pytest
from comfy_host import WORKFLOW_DIR, http, require_comfyui, to_api_prompt
from comfy_models import MISPLACED_VAE

require_comfyui()

from nodes import collect_nodes  # noqa: E402

WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
T2I = WORKFLOW_DIR / "Hunyuan-DiT - text to image (all-in-one file).json"
OFFICIAL = WORKFLOW_DIR / "Hunyuan-DiT - text to image (official release folder).json"
OUR_WORKFLOWS = [T2I.stem, OFFICIAL.stem, "Hunyuan-DiT - image to image", "Hunyuan-DiT - inpainting",
                 "Hunyuan-DiT - text to image, then upscale", "Hunyuan-DiT - multi-turn drawing with a prompt rewriter",
                 "Hunyuan-DiT - text to image with a LoRA", "Hunyuan-DiT - ControlNet (canny edges)",
                 "Hunyuan-DiT - two ControlNets (canny and depth)", "Hunyuan-DiT - IP-Adapter image prompt"]
CUSTOM = "custom (width x height below)"
NODES, FAILURES = collect_nodes()
FINGERPRINTED = {cls.GET_SCHEMA().node_id for cls in NODES if "fingerprint_inputs" in vars(cls)}


def load(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def shrink(prompt: dict) -> dict:
    """The same graph at test scale: 64x64 px (or the input image's size) and 2 steps."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "HunyuanDiTSampler":
            node["inputs"].update(resolution=CUSTOM, width=64, height=64, steps=2)
    return prompt


def volatile(prompt: dict) -> set[str]:
    """Nodes that may run again on an unchanged prompt: those with ``fingerprint_inputs`` (state outside the
    graph, e.g. a saved instruction) and everything downstream of them."""
    found = {nid for nid, node in prompt.items() if node["class_type"] in FINGERPRINTED}
    grew = True
    while grew:
        downstream = {nid for nid, node in prompt.items()
                      if any(isinstance(v, list) and v[0] in found for v in node["inputs"].values())}
        grew = not downstream <= found
        found |= downstream
    return found


def executed(entry: dict, prompt: dict) -> set[str]:
    """The nodes a finished prompt actually ran (all but those the server reports as cached)."""
    cached = {nid for kind, data in entry["status"]["messages"] if kind == "execution_cached" for nid in data["nodes"]}
    return set(prompt) - cached


def node_of(prompt: dict, class_type: str) -> str:
    return next(nid for nid, node in prompt.items() if node["class_type"] == class_type)


def test_our_workflows_are_all_there():
    assert {p.stem for p in WORKFLOWS} >= set(OUR_WORKFLOWS)


def test_template_browser_lists_the_workflows_by_readable_titles_with_their_pictures(comfyui_server):
    """ComfyUI's template browser shows each name from ``/api/workflow_templates`` as the title and loads
    ``<name>.json`` and ``<name>.jpg`` from the pack's folder; a browser sends the spaces as %20."""
    status, listed = http(f"{comfyui_server.url}/api/workflow_templates")
    assert status == 200 and sorted(listed["hunyuan_dit"]) == sorted(p.stem for p in WORKFLOWS)
    for name in listed["hunyuan_dit"]:
        assert name.startswith("Hunyuan-DiT - ") and "_" not in name, name
        for suffix in (".json", ".jpg"):
            url = f"{comfyui_server.url}/api/workflow_templates/hunyuan_dit/{quote(name + suffix)}"
            with urllib.request.urlopen(url, timeout=60) as response:
                assert response.read() == (WORKFLOW_DIR / (name + suffix)).read_bytes(), url


def test_comfyui_registers_every_node_with_its_schema(comfyui_server):
    info = comfyui_server.object_info
    assert FAILURES == {} and len(NODES) == 21
    for cls in NODES:
        schema = cls.GET_SCHEMA()
        entry = info[schema.node_id]
        assert entry["display_name"] == schema.display_name and entry["display_name"].startswith("HunyuanDiT ")
        assert entry["category"].startswith("HunyuanDiT/") and entry["category"] == schema.category
        assert entry["output_name"] == list(cls.RETURN_NAMES) and entry["output"] == list(cls.RETURN_TYPES)
        assert set(entry["input"]["required"]) == set(cls.INPUT_TYPES()["required"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_in_real_comfyui_and_requeues_from_its_cache(path, comfyui_server):
    prompt = shrink(to_api_prompt(load(path), comfyui_server.object_info))
    entry = comfyui_server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [image for out in entry["outputs"].values() for image in out.get("images", [])]
    assert images
    assert all((comfyui_server.base / image["type"] / image["subfolder"] / image["filename"]).is_file()
               for image in images)

    again = comfyui_server.run(prompt)  # queued again unchanged: everything comes from the cache
    assert executed(again, prompt) <= volatile(prompt)
    sampler = node_of(prompt, "HunyuanDiTSampler")
    prompt[sampler]["inputs"]["seed"] += 1  # what control-after-generate "increment" does
    changed = comfyui_server.run(prompt)
    loaders = {nid for nid, node in prompt.items()
               if "Loader" in node["class_type"] or node["class_type"] == "LoadImage"}
    assert sampler in executed(changed, prompt) and not loaders & executed(changed, prompt)


def loaded_since_last_prompt(server) -> list[str]:
    """The models ComfyUI's log says it loaded ("Requested to load <class>") since the last prompt came in."""
    _, log = http(f"{server.url}/internal/logs")
    return re.findall(r"Requested to load (\w+)", log.rsplit("got prompt", 1)[-1])


def test_comfyui_keeps_our_models_loaded_between_runs_until_free_unloads_them(comfyui_server):
    prompt = shrink(to_api_prompt(load(T2I),
                                  comfyui_server.object_info))
    sampler = node_of(prompt, "HunyuanDiTSampler")

    def run(seed: int) -> list[str]:
        prompt[sampler]["inputs"]["seed"] = seed
        assert comfyui_server.run(prompt)["status"]["status_str"] == "success"
        return loaded_since_last_prompt(comfyui_server)

    run(7001)
    assert run(7002) == []  # the sampler and the decoder ran again on the models ComfyUI kept loaded
    assert http(f"{comfyui_server.url}/free", {"unload_models": True})[0] == 200
    # ComfyUI's worker unloads after the next prompt or an idle timeout, whichever comes first: so before one
    # of the next two runs, and that run loads what the cached prompt encoding no longer needs.
    assert sorted(run(7003) + run(7004)) == ["AutoencoderKL", "HunyuanDiT"]


@pytest.mark.parametrize("edit, expected", [
    (dict(resolution=CUSTOM, width=1000, height=64), "not a multiple of 16"),
    (dict(steps=0), "Value 0 smaller than min of 1"),
    (dict(cfg=100.0), "Value 100.0 bigger than max of 30.0"),
    (dict(sampler_name="nope"), "sampler_name 'nope' is not one of"),
    (dict(seed=2**64), "bigger than max"),
])
def test_bad_widgets_are_rejected_by_the_server_before_anything_runs(comfyui_server, edit, expected):
    prompt = to_api_prompt(load(T2I), comfyui_server.object_info)
    sampler = node_of(prompt, "HunyuanDiTSampler")
    prompt[sampler]["inputs"].update(edit)
    status, reply = comfyui_server.queue(prompt)
    assert status == 400, reply
    errors = reply["node_errors"][sampler]["errors"]
    assert any(expected in f"{e['message']}: {e['details']}" for e in errors), errors


def test_the_largest_seed_is_accepted(comfyui_server):
    prompt = shrink(to_api_prompt(load(T2I),
                                  comfyui_server.object_info))
    prompt[node_of(prompt, "HunyuanDiTSampler")]["inputs"]["seed"] = 2**64 - 1
    assert comfyui_server.queue(prompt)[0] == 200


def test_a_missing_or_wrong_model_file_fails_the_run_with_its_reason(comfyui_server):
    """ComfyUI 0.3.64 does not check V3 combo values against their lists, so a model that is not there (a
    saved workflow from another machine) reaches the loader, whose error names the folders searched."""
    info = comfyui_server.object_info
    prompt = shrink(to_api_prompt(load(T2I), info))
    loader = node_of(prompt, "HunyuanDiTCheckpointLoader")
    prompt[loader]["inputs"]["ckpt_name"] = "checkpoints/missing.safetensors"
    error = run_error(comfyui_server, prompt)
    assert error["node_id"] == loader and error["exception_type"].endswith("ModelFileError")
    assert "'missing.safetensors' not found in the 'checkpoints' model folder; searched" in error["exception_message"]

    official = shrink(to_api_prompt(load(OFFICIAL), info))
    model_loader = node_of(official, "HunyuanDiTModelLoader")
    official[model_loader]["inputs"]["model_name"] = MISPLACED_VAE  # listed, but a VAE where the DiT belongs
    error = run_error(comfyui_server, official)
    assert error["node_id"] == model_loader and error["exception_type"].endswith("ModelFileError")
    assert "VAE" in error["exception_message"] and "Hunyuan-DiT" in error["exception_message"]


def run_error(server, prompt: dict) -> dict:
    """The ``execution_error`` message of a prompt that must fail while it runs."""
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error", entry["status"]
    return next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")
