"""The LoRA node in the real ComfyUI: in its process (the V3 node run as ComfyUI's executor runs it) and through
its server (one queued prompt with several branches, ComfyUI's output cache).

The reference for every result is the same tiny model with the LoRA merged by hand in plain torch
(``W + strength · scale · up @ down``, from the changes the LoRA writers of tests/test_lora.py report),
run through the same sampler / text-encode nodes.
"""

from __future__ import annotations

import pytest
import torch
from comfy_host import require_comfyui
from comfy_host import run_node as call_node
from comfy_models import ALL_IN_ONE, LORA_JADE, LORA_KOHYA, LORA_PORCELAIN, tiny_models
from safetensors.torch import load_file

require_comfyui()

from hunyuan_core.loaders import load_parts  # noqa: E402
from hunyuan_core.tiny import tiny_bert_vocab_path  # noqa: E402
from nodes._common import ModelHandle, TextEncoderHandle  # noqa: E402
from nodes.conditioning import HunyuanDiTTextEncode  # noqa: E402
from nodes.loaders import HunyuanDiTCheckpointLoader  # noqa: E402
from nodes.lora import HunyuanDiTLoraLoader, no_text_encoder_note  # noqa: E402
from nodes.sampling import CUSTOM, HunyuanDiTSampler  # noqa: E402

PROMPT = "青花瓷风格，一只戴着墨镜的柴犬"
SETTINGS = dict(resolution=CUSTOM, width=64, height=64, steps=2, cfg=6.0, guidance_rescale=0.0,
                sampler_name="ddpm", schedule="default", seed=1, batch_size=1, denoise=1.0)
LOADER = dict(ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto")
TOLERANCE = 1e-5  # relative, fp32: the node's merge and the hand merge differ only in rounding order


def loader_outputs() -> tuple[ModelHandle, TextEncoderHandle]:
    """Model and text-encoder handles from HunyuanDiT Load Checkpoint on the tiny all-in-one file."""
    (model, text_encoder, _vae, _info), _ui = call_node(HunyuanDiTCheckpointLoader, **LOADER)
    return model, text_encoder


def add_lora(model, lora_name, strength, text_encoder=None, unique_id="1"):
    outputs, ui = call_node(HunyuanDiTLoraLoader, unique_id=unique_id, model=model, lora_name=lora_name,
                            strength=strength, text_encoder=text_encoder)
    return outputs, ui


def encode(text_encoder: TextEncoderHandle):
    (positive, negative), _ui = call_node(HunyuanDiTTextEncode, text_encoder=text_encoder, positive=PROMPT,
                                          negative="")
    return positive, negative


def sample(model: ModelHandle, conditioning, seed: int = SETTINGS["seed"]) -> torch.Tensor:
    (latent,), _ui = call_node(HunyuanDiTSampler, model=model, positive=conditioning[0], negative=conditioning[1],
                               **{**SETTINGS, "seed": seed})
    return latent["samples"]


def merged_by_hand(loras: list[tuple[str, float]]) -> tuple[ModelHandle, TextEncoderHandle]:
    """A fresh copy of the tiny model with ``loras`` (picker name, strength) merged in plain torch."""
    path = tiny_models().models / ALL_IN_ONE
    parts = load_parts(path, bert_vocab=tiny_bert_vocab_path(path.parent))
    with torch.no_grad():
        for name, strength in loras:
            lora = tiny_models().loras[name]
            for module, changes in ((parts.dit, lora.dit), (parts.text_encoder.bert, lora.bert)):
                for key, start, down, up, scale in changes:
                    module.get_submodule(key).weight[start: start + up.shape[0]] += strength * scale * (up @ down)
    return ModelHandle(parts.dit), TextEncoderHandle(parts.text_encoder)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the largest value of ``b``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture()
def lora_host(comfyui):
    """The pack inside the in-process ComfyUI, whose models/loras/ holds the tiny LoRAs."""
    return comfyui


def test_the_node_is_declared_like_comfyuis_lora_loader(lora_host):
    schema = HunyuanDiTLoraLoader.GET_SCHEMA()
    assert (schema.node_id, schema.display_name, schema.category) == (
        "HunyuanDiTLoraLoader", "HunyuanDiT Load LoRA", "HunyuanDiT/loaders")
    inputs = {i.id: i for i in schema.inputs}
    strength = inputs["strength"]
    assert (strength.default, strength.min, strength.max, strength.step) == (1.0, -10.0, 10.0, 0.01)
    assert set(inputs["lora_name"].options) == {LORA_JADE, LORA_KOHYA, LORA_PORCELAIN}
    assert inputs["text_encoder"].optional and not inputs["model"].optional
    assert [o.display_name for o in schema.outputs] == ["model", "text_encoder"]


def test_chained_loras_sample_like_the_weights_merged_by_hand_and_leave_the_incoming_model_alone(lora_host):
    model, text_encoder = loader_outputs()
    conditioning = encode(text_encoder)
    before = weights(model.dit)
    base = sample(model, conditioning)

    (porcelain, te_out), _ = add_lora(model, LORA_PORCELAIN, 0.7)
    (chained, _), _ = add_lora(porcelain, LORA_KOHYA, -0.5)
    assert model.loras == () and te_out is None  # the incoming handle is not changed, no encoder came in
    assert [(lora.has_text_encoder, s) for lora, s in chained.loras] == [(False, 0.7), (True, -0.5)]
    assert chained.dit is model.dit and all(torch.equal(before[k], v) for k, v in model.dit.state_dict().items())

    got = sample(chained, conditioning)
    reference, _ = merged_by_hand([(LORA_PORCELAIN, 0.7), (LORA_KOHYA, -0.5)])
    expected = sample(reference, conditioning)
    assert max_difference(got, expected) <= TOLERANCE
    assert max_difference(got, base) > 0.1  # the LoRAs do change the picture

    assert torch.equal(sample(model, conditioning), base)  # the other branch: base weights back, bit for bit
    assert all(torch.equal(before[k], v) for k, v in model.dit.state_dict().items())
    assert torch.equal(sample(porcelain, conditioning), sample(merged_by_hand([(LORA_PORCELAIN, 0.7)])[0], conditioning))


def test_strength_zero_changes_nothing(lora_host):
    model, text_encoder = loader_outputs()
    conditioning = encode(text_encoder)
    base = sample(model, conditioning)
    (same_model, same_encoder), ui = add_lora(model, LORA_KOHYA, 0.0, text_encoder)
    assert same_model is model and same_encoder is text_encoder and ui == {}
    assert torch.equal(sample(same_model, encode(same_encoder)), base)


def test_the_text_encoder_part_applies_to_the_encoder_and_only_to_its_branch(lora_host, node_texts):
    model, text_encoder = loader_outputs()
    base = encode(text_encoder)

    (_, te_lora), ui = add_lora(model, LORA_KOHYA, 0.7, text_encoder)
    assert ui == {} and te_lora is not text_encoder and text_encoder.loras == ()
    assert te_lora.encoder is text_encoder.encoder
    got = encode(te_lora)
    _, reference = merged_by_hand([(LORA_KOHYA, 0.7)])
    expected = encode(reference)
    assert max_difference(got[0].clip, expected[0].clip) <= TOLERANCE
    assert max_difference(got[0].clip, base[0].clip) > 0.05
    assert torch.equal(got[0].t5, base[0].t5)  # BERT only: mT5 has no LoRA
    assert torch.equal(encode(text_encoder)[0].clip, base[0].clip)  # the encoder's other branch: exact base

    (_, passed), _ = add_lora(model, LORA_PORCELAIN, 0.7, text_encoder)  # no BERT parts in the file
    assert passed is text_encoder

    (_, missing), ui = add_lora(model, LORA_KOHYA, 0.7, unique_id="7")
    note = no_text_encoder_note(LORA_KOHYA)
    assert missing is None and ui == {"text": [note]} and ("7", note) in node_texts


# ------------------------------------------------------------------------------------------- server
def lora_node(model: list, lora_name: str, strength: float, text_encoder: list | None = None) -> dict:
    inputs = {"model": model, "lora_name": lora_name, "strength": strength}
    if text_encoder is not None:
        inputs["text_encoder"] = text_encoder
    return {"class_type": "HunyuanDiTLoraLoader", "inputs": inputs}


def branch(prompt: dict, name: str, model: list, conditioning: str, seed: int) -> None:
    """A sampler on ``model`` and a SaveLatent writing ``lora_test/<name>``."""
    prompt[f"{name}_sampler"] = {"class_type": "HunyuanDiTSampler", "inputs": {
        "model": model, "positive": [conditioning, 0], "negative": [conditioning, 1], **SETTINGS, "seed": seed}}
    prompt[f"{name}_save"] = {"class_type": "SaveLatent", "inputs": {
        "samples": [f"{name}_sampler", 0], "filename_prefix": f"lora_test/{name}"}}


def saved_latents(server, entry: dict, prompt: dict) -> dict[str, torch.Tensor]:
    """The latents each branch's SaveLatent wrote in this run, by branch name."""
    found = {}
    for node_id, output in entry["outputs"].items():
        if "latents" not in output:  # the text-encode nodes' (empty) warnings
            continue
        name = prompt[node_id]["inputs"]["filename_prefix"].split("/")[1]
        (latent,) = output["latents"]
        path = server.base / latent["type"] / latent["subfolder"] / latent["filename"]
        found[name] = load_file(str(path))["latent_tensor"]
    return found


def test_branches_with_different_loras_from_one_loader_are_all_right_in_one_prompt(comfyui_server, lora_host):
    prompt = {
        "ckpt": {"class_type": "HunyuanDiTCheckpointLoader", "inputs": dict(LOADER)},
        "encode": {"class_type": "HunyuanDiTTextEncode",
                   "inputs": {"text_encoder": ["ckpt", 1], "positive": PROMPT, "negative": "", "bert_length": 77}},
        "porcelain": lora_node(["ckpt", 0], LORA_PORCELAIN, 0.7),
        "jade": lora_node(["ckpt", 0], LORA_JADE, -1.3),
        "kohya": lora_node(["porcelain", 0], LORA_KOHYA, 0.5, text_encoder=["ckpt", 1]),
        "kohya_encode": {"class_type": "HunyuanDiTTextEncode",
                         "inputs": {"text_encoder": ["kohya", 1], "positive": PROMPT, "negative": "", "bert_length": 77}},
    }
    branch(prompt, "base", ["ckpt", 0], "encode", seed=1)
    branch(prompt, "porcelain", ["porcelain", 0], "encode", seed=1)
    branch(prompt, "jade", ["jade", 0], "encode", seed=1)
    branch(prompt, "kohya", ["kohya", 0], "kohya_encode", seed=1)
    sets = {"base": [], "porcelain": [(LORA_PORCELAIN, 0.7)], "jade": [(LORA_JADE, -1.3)],
            "kohya": [(LORA_PORCELAIN, 0.7), (LORA_KOHYA, 0.5)]}

    def expected(name: str, seed: int) -> torch.Tensor:
        model, text_encoder = merged_by_hand(sets[name])
        return sample(model, encode(text_encoder), seed)

    entry = comfyui_server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    got = saved_latents(comfyui_server, entry, prompt)
    assert set(got) == set(sets)
    for name in sets:
        assert max_difference(got[name], expected(name, 1)) <= TOLERANCE, name
    assert min(max_difference(got[name], got["base"]) for name in ("porcelain", "jade", "kohya")) > 0.1

    # Again with another jade strength and base seed: those branches run again, on the DiT the others left
    # merged; the unchanged branches come from ComfyUI's cache.
    prompt["jade"]["inputs"]["strength"] = 2.0
    prompt["base_sampler"]["inputs"]["seed"] = 2
    sets["jade"] = [(LORA_JADE, 2.0)]
    again = comfyui_server.run(prompt)
    cached = {nid for kind, data in again["status"]["messages"] if kind == "execution_cached" for nid in data["nodes"]}
    assert {"porcelain_sampler", "kohya_sampler", "kohya_encode", "ckpt"} <= cached
    assert not {"jade_sampler", "base_sampler"} & cached
    rerun = saved_latents(comfyui_server, again, prompt)
    for name, seed in (("jade", 1), ("base", 2)):
        assert max_difference(rerun[name], expected(name, seed)) <= TOLERANCE, name
