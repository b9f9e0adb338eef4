"""Every workflow in workflows/: checked against the nodes, converted to API format, run on tiny models.

The first half tests the test harness itself (tests/comfy_graph.py) on toy nodes, so that a workflow
passing here means what ComfyUI would mean by it.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from comfy_graph import (
    Executor,
    WorkflowError,
    check_ui_workflow,
    to_api_prompt,
    validate_prompt,
)
from comfy_host import CORE_NODES, INPUT_DIR_ENV, OUTPUT_DIR_ENV, ROOT
from comfy_models import tiny_models

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
OUR_WORKFLOWS = ["hunyuan_dit_t2i_all_in_one", "hunyuan_dit_t2i_official_v11", "hunyuan_dit_img2img",
                 "hunyuan_dit_inpaint", "hunyuan_dit_t2i_upscale", "hunyuan_dit_multiturn"]


# ------------------------------------------------------------------------------ harness, toy nodes
class ToySource:
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "value": ("INT", {"default": 1, "min": 0, "max": 10, "tooltip": "value"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**32, "control_after_generate": True}),
            "mode": (["add", "mul"], {"tooltip": "mode"}),
        }}

    RETURN_TYPES = ("TOY",)
    FUNCTION = "run"

    def run(self, value, seed, mode):
        ToySource.calls += 1
        return (value + seed if mode == "add" else value * seed,)


class ToySink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"toy": ("TOY",), "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0})},
                "optional": {"extra": ("TOY",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def VALIDATE_INPUTS(cls, scale):
        return True if scale != 1.5 else "scale 1.5 is forbidden"

    def run(self, toy, scale, unique_id, extra=None):
        return {"ui": {"value": [toy * scale + (extra or 0)], "node": [unique_id]}}


TOYS = {"ToySource": ToySource, "ToySink": ToySink}


def toy_workflow() -> dict:
    return {
        "last_node_id": 3, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "ToySource", "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "TOY", "type": "TOY", "links": [1], "slot_index": 0}],
             "properties": {}, "widgets_values": [3, 4, "fixed", "add"]},
            {"id": 2, "type": "ToySink", "pos": [300, 0], "size": [200, 100], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "toy", "type": "TOY", "link": 1}], "outputs": [],
             "properties": {}, "widgets_values": [2.0]},
            {"id": 3, "type": "ToySource", "pos": [0, 200], "size": [200, 100], "flags": {}, "order": 2, "mode": 0,
             "inputs": [], "outputs": [{"name": "TOY", "type": "TOY", "links": [], "slot_index": 0}],
             "properties": {}, "widgets_values": [1, 1, "randomize", "mul"]},
        ],
        "links": [[1, 1, 0, 2, 0, "TOY"]],
    }


def test_harness_converts_widgets_by_position_and_skips_control_values():
    prompt = to_api_prompt(toy_workflow(), TOYS)
    assert prompt["1"]["inputs"] == {"value": 3, "seed": 4, "mode": "add"}
    assert prompt["2"]["inputs"] == {"scale": 2.0, "toy": ["1", 0]}
    assert prompt["2"]["class_type"] == "ToySink"


@pytest.mark.parametrize("edit, expected", [
    (lambda w: w["nodes"][0].update(widgets_values=[11, 4, "fixed", "add"]), "bigger than max"),
    (lambda w: w["nodes"][0].update(widgets_values=[3, 4, "fixed", "sub"]), "not in"),
    (lambda w: w["nodes"][0].update(widgets_values=[3, 4, "add"]), "widget slots"),
    (lambda w: w["nodes"][0].update(widgets_values=[3, 4, "sometimes", "add"]), "control-after-generate"),
    (lambda w: w["links"][0].__setitem__(5, "IMAGE"), "typed 'IMAGE'"),
    (lambda w: w["nodes"][1]["inputs"][0].update(link=None), "is not connected"),
    (lambda w: w.update(version=1), "version"),
    (lambda w: w["nodes"][1].update(type="Nope"), "no such node class"),
])
def test_harness_rejects_bad_ui_workflows(edit, expected):
    workflow = toy_workflow()
    edit(workflow)
    problems = check_ui_workflow(workflow, TOYS)
    assert any(expected in p for p in problems), problems


def test_harness_validates_api_prompts_like_comfyui():
    prompt = to_api_prompt(toy_workflow(), TOYS)
    assert validate_prompt(prompt, TOYS)["1"]["inputs"]["value"] == 3
    bad = copy.deepcopy(prompt)
    bad["1"]["inputs"]["value"] = "7"  # converted like ComfyUI, not rejected
    assert validate_prompt(bad, TOYS)["1"]["inputs"]["value"] == 7
    bad["2"]["inputs"]["scale"] = 1.5
    with pytest.raises(WorkflowError, match="scale 1.5 is forbidden"):
        validate_prompt(bad, TOYS)
    bad = copy.deepcopy(prompt)
    del bad["2"]["inputs"]["toy"]
    with pytest.raises(WorkflowError, match="required input 'toy' is missing"):
        validate_prompt(bad, TOYS)
    bad = copy.deepcopy(prompt)
    bad["2"]["inputs"]["extra"] = ["1", 1]
    with pytest.raises(WorkflowError, match="links to output 1 of node 1"):
        validate_prompt(bad, TOYS)
    bad["2"]["inputs"]["extra"] = ["2", 0]
    with pytest.raises(WorkflowError, match="cycle"):
        validate_prompt(bad, TOYS)
    with pytest.raises(WorkflowError, match="no output nodes"):
        validate_prompt({"1": prompt["1"]}, TOYS)


def test_harness_runs_only_needed_nodes_once_and_caches_across_prompts():
    prompt = to_api_prompt(toy_workflow(), TOYS)
    executor = Executor(TOYS)
    ToySource.calls = 0
    executor.run(prompt)
    assert executor.executed == ["1", "2"]  # node 3 feeds no output: never runs
    assert executor.ui["2"] == {"value": [14.0], "node": ["2"]}
    executor.run(prompt)
    assert executor.executed == [] and ToySource.calls == 1
    prompt["2"]["inputs"]["scale"] = 1.0
    executor.run(prompt)
    assert executor.executed == ["2"] and executor.ui["2"]["value"] == [7.0]


# ----------------------------------------------------------------------------- the shipped workflows
@pytest.fixture()
def pack(monkeypatch, tmp_path):
    """The pack's nodes plus stand-ins for ComfyUI's LoadImage/SaveImage, on the tiny model folders."""
    from nodes import collect_mappings

    folders = tiny_models()
    monkeypatch.setenv("HUNYUAN_MODELS_DIR", str(folders.models))
    monkeypatch.setenv(INPUT_DIR_ENV, str(folders.input))
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "output"))
    monkeypatch.setenv("HUNYUAN_DIT_CONFIG_DIR", str(tmp_path / "user"))  # the rewriter's conversations
    classes, _names, failures = collect_mappings()
    assert failures == {}
    return {**classes, **CORE_NODES}


def shrink(prompt: dict) -> dict:
    """The same graph at test scale: 64x64 px (or the input image's size) and 2 steps."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "HunyuanDiTSampler":
            node["inputs"].update(resolution="custom (width x height below)", width=64, height=64, steps=2)
    return prompt


def volatile(prompt: dict, pack: dict) -> set[str]:
    """Nodes that may run again on an unchanged prompt: those with IS_CHANGED (state outside the graph,
    e.g. a conversation) and everything downstream of them."""
    found = {nid for nid, node in prompt.items() if hasattr(pack[node["class_type"]], "IS_CHANGED")}
    grew = True
    while grew:
        downstream = {nid for nid, node in prompt.items()
                      if any(isinstance(v, list) and v[0] in found for v in node["inputs"].values())}
        grew = not downstream <= found
        found |= downstream
    return found


def test_our_workflows_are_all_there():
    assert {p.stem for p in WORKFLOWS} >= set(OUR_WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_the_nodes_and_converts_to_api_format(path, pack):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert check_ui_workflow(workflow, pack) == []
    prompt = validate_prompt(to_api_prompt(workflow, pack), pack)
    assert json.loads(json.dumps(prompt)) == prompt  # what POST /prompt takes: plain JSON
    classes = {node["class_type"] for node in prompt.values()}
    assert "SaveImage" in classes or "PreviewImage" in classes


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_end_to_end_on_tiny_models(path, pack, tmp_path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    prompt = shrink(to_api_prompt(workflow, pack))
    executor = Executor(pack)
    executor.run(prompt)
    saved = [image for ui in executor.ui.values() for image in ui.get("images", [])]
    assert saved and all((tmp_path / "output" / image["filename"]).is_file() for image in saved)
    assert set(executor.executed) == set(prompt)  # every node feeds an output

    executor.run(prompt)  # queued again unchanged: everything comes from the cache
    assert set(executor.executed) <= volatile(prompt, pack)
    sampler = next(nid for nid, node in prompt.items() if node["class_type"] == "HunyuanDiTSampler")
    prompt[sampler]["inputs"]["seed"] += 1  # what control-after-generate "increment" does
    executor.run(prompt)
    loaders = {nid for nid, node in prompt.items()
               if "Loader" in node["class_type"] or node["class_type"] == "LoadImage"}
    assert sampler in executor.executed and not loaders & set(executor.executed)


def test_inpaint_workflow_keeps_the_unmasked_area(pack):
    """example.png is transparent in its centre only: LoadImage's MASK repaints just that square."""
    workflow = json.loads((ROOT / "workflows" / "hunyuan_dit_inpaint.json").read_text(encoding="utf-8"))
    prompt = shrink(to_api_prompt(workflow, pack))
    executor = Executor(pack)
    outputs = executor.run(prompt)
    encode = next(nid for nid, node in prompt.items() if node["class_type"] == "HunyuanDiTVAEEncode")
    sampler = next(nid for nid, node in prompt.items() if node["class_type"] == "HunyuanDiTSampler")
    before, after = outputs[encode][0]["samples"], outputs[sampler][0]["samples"]
    assert before.shape == after.shape == (1, 4, 8, 8)
    assert (before[..., 0, :] - after[..., 0, :]).abs().max() < 1e-4  # border rows kept
    assert (before[..., 3:5, 3:5] - after[..., 3:5, 3:5]).abs().max() > 1e-3  # centre repainted


@pytest.mark.parametrize("edit, expected", [
    (dict(resolution="custom (width x height below)", width=1000, height=64), "not a multiple of 16"),
    (dict(steps=0), "smaller than min"),
    (dict(cfg=100.0), "bigger than max"),
    (dict(sampler_name="nope"), "not in"),
])
def test_bad_widgets_are_rejected_before_any_model_loads(pack, monkeypatch, edit, expected):
    import nodes.loaders

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded for a prompt that should have been rejected")

    monkeypatch.setattr(nodes.loaders, "load_parts", must_not_load)
    workflow = json.loads((ROOT / "workflows" / "hunyuan_dit_t2i_all_in_one.json").read_text(encoding="utf-8"))
    prompt = to_api_prompt(workflow, pack)
    sampler = next(nid for nid, node in prompt.items() if node["class_type"] == "HunyuanDiTSampler")
    prompt[sampler]["inputs"].update(edit)
    executor = Executor(pack)
    with pytest.raises(WorkflowError, match=expected):
        executor.run(prompt)
    assert executor.executed == []


# ------------------------------------------------------------------ the real ComfyUI, when available
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def comfyui_server(tmp_path_factory):
    """ComfyUI from $COMFYUI_DIR on 127.0.0.1 (--cpu), with this pack as its only custom node pack; run by
    $COMFYUI_PYTHON when ComfyUI has its own environment (default: this interpreter)."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run the workflows in real ComfyUI")
    folders = tiny_models()
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "hunyuan_dit").symlink_to(ROOT, target_is_directory=True)
    (base / "models").symlink_to(folders.models, target_is_directory=True)
    (base / "input").symlink_to(folders.input, target_is_directory=True)
    port = _free_port()
    log = open(base / "comfyui.log", "w")
    server = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
         "--port", str(port), "--base-directory", str(base), "--disable-auto-launch"],
        cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if _http(f"{url}/object_info/HunyuanDiTSampler")[1]:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"ComfyUI did not start with the pack: {(base / 'comfyui.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, base
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def _wait_for(url: str, prompt_id: str) -> dict:
    deadline = time.time() + 300
    while time.time() < deadline:
        history = _http(f"{url}/history/{prompt_id}")[1]
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_in_real_comfyui(path, pack, comfyui_server):
    url, base = comfyui_server
    info = _http(f"{url}/object_info")[1]
    for node_id, cls in pack.items():
        assert node_id in info, f"ComfyUI did not register {node_id}"
        assert set(info[node_id]["input"]["required"]) == set(cls.INPUT_TYPES()["required"])
    prompt = shrink(to_api_prompt(json.loads(path.read_text(encoding="utf-8")), pack))
    status, reply = _http(f"{url}/prompt", {"prompt": prompt})
    assert status == 200 and reply["node_errors"] == {}, reply
    entry = _wait_for(url, reply["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [image for out in entry["outputs"].values() for image in out.get("images", [])]
    assert images


def test_real_comfyui_rejects_a_bad_size_before_running(pack, comfyui_server):
    url, _base = comfyui_server
    prompt = to_api_prompt(json.loads((ROOT / "workflows" / "hunyuan_dit_t2i_all_in_one.json").read_text()), pack)
    sampler = next(nid for nid, node in prompt.items() if node["class_type"] == "HunyuanDiTSampler")
    prompt[sampler]["inputs"].update(resolution="custom (width x height below)", width=1000)
    status, reply = _http(f"{url}/prompt", {"prompt": prompt})
    assert status == 400
    errors = reply["node_errors"][sampler]["errors"]
    assert errors[0]["type"] == "custom_validation_failed" and "multiple of 16" in errors[0]["details"]
