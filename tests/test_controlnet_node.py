"""The ControlNet nodes in the real ComfyUI: in its process (the V3 nodes run as ComfyUI's executor runs them) and
through its server (one queued prompt with two branches from one loader, a missing VAE).

The reference for every result is the core on its own: the same tiny files loaded with ``hunyuan_core``, the hint
as a core image tensor, ``prepare_controls`` + ``sample(controls=...)`` with the settings the nodes were given.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_host import require_comfyui
from comfy_host import run_node as call_node
from comfy_models import ALL_IN_ONE, CONTROLNET_CANNY, CONTROLNET_DEPTH, CONTROLNET_V11, EXAMPLE_IMAGE, tiny_models
from kornia.filters import canny as kornia_canny
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import load_file

require_comfyui()

from hunyuan_core import Control, load_controlnet, prepare_controls  # noqa: E402
from hunyuan_core.errors import InputError  # noqa: E402
from hunyuan_core.loaders import load_parts  # noqa: E402
from hunyuan_core.model.vae import SDXL_SCALING_FACTOR  # noqa: E402
from hunyuan_core.sampling.sample import sample as core_sample  # noqa: E402
from hunyuan_core.tiny import tiny_bert_vocab_path  # noqa: E402
from nodes.conditioning import HunyuanDiTTextEncode  # noqa: E402
from nodes.controlnet import (  # noqa: E402
    CONSTANT,
    CUSTOM,
    OFFICIAL_DECAY,
    HunyuanDiTCanny,
    HunyuanDiTControlNetApply,
    HunyuanDiTControlNetLoader,
    schedule_weights,
)
from nodes.loaders import HunyuanDiTCheckpointLoader  # noqa: E402
from nodes.sampling import CUSTOM as CUSTOM_SIZE  # noqa: E402
from nodes.sampling import HunyuanDiTSampler  # noqa: E402

PROMPT = "一只戴着墨镜的柴犬"
SETTINGS = dict(resolution=CUSTOM_SIZE, width=80, height=64, steps=3, cfg=6.0, guidance_rescale=0.0,
                sampler_name="ddim", schedule="default", seed=1, batch_size=1, denoise=1.0)
LOADER = dict(ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto")
TOLERANCE = 1e-6  # relative, fp32: node and core run the same computation


def hint(seed: int, height: int, width: int) -> torch.Tensor:
    """A ComfyUI IMAGE [1, H, W, 3] in 0..1."""
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


def loader_outputs():
    (model, text_encoder, vae, _info), _ui = call_node(HunyuanDiTCheckpointLoader, **LOADER)
    (positive, negative), _ui = call_node(HunyuanDiTTextEncode, text_encoder=text_encoder, positive=PROMPT, negative="")
    return model, vae, (positive, negative)


def load_cn(name: str):
    (controlnet,), _ui = call_node(HunyuanDiTControlNetLoader, controlnet_name=name, dtype="auto")
    return controlnet


def apply(model, controlnet, image, vae, strength=1.0, start=0.0, end=1.0, schedule=CONSTANT, weights="",
          resize_mode="crop_and_resize"):
    (out,), _ui = call_node(HunyuanDiTControlNetApply, model=model, controlnet=controlnet, image=image, vae=vae,
                            strength=strength, start_percent=start, end_percent=end, layer_schedule=schedule,
                            layer_weights=weights, resize_mode=resize_mode)
    return out


def sample(model, conditioning, seed: int = 1) -> torch.Tensor:
    (latent,), _ui = call_node(HunyuanDiTSampler, model=model, positive=conditioning[0], negative=conditioning[1],
                               **{**SETTINGS, "seed": seed})
    return latent["samples"]


def core_latents(controls: list[tuple[str, torch.Tensor, dict]], seed: int = 1) -> torch.Tensor:
    """The core alone: fresh loads of the same files, each ``(controlnet picker name, IMAGE, Control kwargs)``
    prepared at the sampler's size and sampled; unscaled like a LATENT."""
    models = tiny_models().models
    path = models / ALL_IN_ONE
    parts = load_parts(path, bert_vocab=tiny_bert_vocab_path(path.parent))
    positive, negative = (parts.text_encoder.encode([text]) for text in (PROMPT, ""))
    built = [Control(load_controlnet(models / "controlnet" / name), image.permute(0, 3, 1, 2), **kwargs)
             for name, image, kwargs in controls]
    with torch.inference_mode():
        prepared = prepare_controls(built, parts.vae, SETTINGS["width"], SETTINGS["height"])
        scaled = core_sample(parts.dit, positive, negative, width=SETTINGS["width"], height=SETTINGS["height"],
                             steps=SETTINGS["steps"], guidance_scale=SETTINGS["cfg"], sampler=SETTINGS["sampler_name"],
                             seed=seed, controls=prepared)
    return scaled / SDXL_SCALING_FACTOR


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the largest value of ``b``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture()
def cn_host(comfyui):
    """The pack inside the in-process ComfyUI, whose models/controlnet/ holds the tiny ControlNets."""
    return comfyui


def test_the_nodes_are_declared_like_the_packs_others(cn_host):
    loader, apply_ = HunyuanDiTControlNetLoader.GET_SCHEMA(), HunyuanDiTControlNetApply.GET_SCHEMA()
    assert (loader.node_id, loader.display_name, loader.category) == (
        "HunyuanDiTControlNetLoader", "HunyuanDiT Load ControlNet", "HunyuanDiT/loaders")
    assert (apply_.node_id, apply_.display_name, apply_.category) == (
        "HunyuanDiTControlNetApply", "HunyuanDiT Apply ControlNet", "HunyuanDiT/conditioning")
    names = {i.id: i for i in loader.inputs}["controlnet_name"].options
    assert {CONTROLNET_CANNY, CONTROLNET_DEPTH, CONTROLNET_V11} <= set(names)  # controlnet/hunyuandit/ included
    inputs = {i.id: i for i in apply_.inputs}
    assert [i.id for i in apply_.inputs][:4] == ["model", "controlnet", "image", "vae"]
    assert not any(i.optional for i in apply_.inputs) and all(i.tooltip for i in apply_.inputs)
    assert (inputs["start_percent"].min, inputs["end_percent"].max, inputs["end_percent"].default) == (0.0, 1.0, 1.0)
    assert inputs["resize_mode"].default == "crop_and_resize"


def test_layer_schedules():
    assert schedule_weights(CONSTANT, "ignored", 19) is None
    decay = schedule_weights(OFFICIAL_DECAY, "", 19)  # the official README: 1.0 * 0.825 ** (19 - i), i = 0..18
    assert decay == [0.825 ** (19 - i) for i in range(19)] and decay[-1] == 0.825 and len(decay) == 19
    assert schedule_weights(CUSTOM, "1, 0.5 0.25,0", 4) == [1.0, 0.5, 0.25, 0.0]
    with pytest.raises(InputError, match="this ControlNet has 4 blocks, so 4 weights are needed; got 3"):
        schedule_weights(CUSTOM, "1, 2, 3", 4)
    with pytest.raises(InputError, match="expected 4 numbers separated by commas, got '1, x'"):
        schedule_weights(CUSTOM, "1, x", 4)


def test_apply_samples_like_the_core_and_leaves_the_incoming_model_alone(cn_host):
    model, vae, conditioning = loader_outputs()
    canny = load_cn(CONTROLNET_CANNY)
    blocks = len(canny.blocks)
    image = hint(0, 40, 72)  # another size and aspect than the sampler's 80x64: resized by the core's mode
    base = sample(model, conditioning)

    controlled = apply(model, canny, image, vae, strength=0.8, start=0.0, end=0.7, schedule=OFFICIAL_DECAY,
                       resize_mode="resize_and_fill")
    assert model.controls == () and len(controlled.controls) == 1 and controlled.dit is model.dit
    got = sample(controlled, conditioning)
    expected = core_latents([(CONTROLNET_CANNY, image, dict(
        strength=[0.8 * 0.825 ** (blocks - i) for i in range(blocks)], start=0.0, end=0.7,
        resize_mode="resize_and_fill"))])
    assert max_difference(got, expected) <= TOLERANCE
    assert max_difference(got, base) > 0.01  # the ControlNet does change the result
    assert torch.equal(sample(model, conditioning), base)  # the incoming handle still samples without it

    off = apply(model, canny, image, vae, strength=0.0)
    assert torch.equal(sample(off, conditioning), base)  # strength 0 is no ControlNet


def test_two_chained_controlnets_sample_like_the_core_with_both(cn_host):
    model, vae, conditioning = loader_outputs()
    canny, depth = load_cn(CONTROLNET_CANNY), load_cn(CONTROLNET_DEPTH)
    edges, depth_map = hint(1, 48, 64), hint(2, 96, 64)
    weights = ", ".join(str(0.1 * (i + 1)) for i in range(len(depth.blocks)))
    first = apply(model, canny, edges, vae, strength=1.2)
    both = apply(first, depth, depth_map, vae, strength=2.0, start=0.3, end=1.0, schedule=CUSTOM, weights=weights)
    assert len(first.controls) == 1 and len(both.controls) == 2

    got = sample(both, conditioning)
    expected = core_latents([
        (CONTROLNET_CANNY, edges, dict(strength=1.2)),
        (CONTROLNET_DEPTH, depth_map, dict(strength=[2.0 * 0.1 * (i + 1) for i in range(len(depth.blocks))],
                                           start=0.3, end=1.0)),
    ])
    assert max_difference(got, expected) <= TOLERANCE
    assert max_difference(got, sample(first, conditioning)) > 1e-3  # the second one counts too


def test_a_controlnet_of_another_release_is_refused_in_one_line(cn_host):
    model, vae, _ = loader_outputs()
    with pytest.raises(InputError) as error:
        apply(model, load_cn(CONTROLNET_V11), hint(0, 64, 64), vae)
    message = str(error.value)
    assert "\n" not in message and "v1.1" in message and "v1.2" in message


def test_an_empty_step_range_is_refused(cn_host):
    model, vae, _ = loader_outputs()
    with pytest.raises(InputError, match=r"start_percent \(0.5\) must be below end_percent \(0.5\)"):
        apply(model, load_cn(CONTROLNET_CANNY), hint(0, 64, 64), vae, start=0.5, end=0.5)


# ------------------------------------------------------------------------------------------- server
def saved_latents(server, entry: dict, prompt: dict) -> dict[str, torch.Tensor]:
    """The latents each branch's SaveLatent wrote in this run, by branch name."""
    found = {}
    for node_id, output in entry["outputs"].items():
        if "latents" in output:
            name = prompt[node_id]["inputs"]["filename_prefix"].split("/")[1]
            (latent,) = output["latents"]
            found[name] = load_file(str(server.base / latent["type"] / latent["subfolder"] / latent["filename"]))
    return {name: tensors["latent_tensor"] for name, tensors in found.items()}


def controlnet_prompt() -> dict:
    """One loader, one ControlNet file, two Apply nodes with different hints and settings, a sampler for each."""
    prompt = {
        "ckpt": {"class_type": "HunyuanDiTCheckpointLoader", "inputs": dict(LOADER)},
        "encode": {"class_type": "HunyuanDiTTextEncode",
                   "inputs": {"text_encoder": ["ckpt", 1], "positive": PROMPT, "negative": "", "bert_length": 77}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "edges": {"class_type": "Canny", "inputs": {"image": ["image", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "cn": {"class_type": "HunyuanDiTControlNetLoader", "inputs": {"controlnet_name": CONTROLNET_CANNY, "dtype": "auto"}},
    }
    for name, image, strength, end in (("a", ["edges", 0], 1.0, 1.0), ("b", ["image", 0], 0.6, 0.5)):
        prompt[f"{name}_apply"] = {"class_type": "HunyuanDiTControlNetApply", "inputs": {
            "model": ["ckpt", 0], "controlnet": ["cn", 0], "image": image, "vae": ["ckpt", 2], "strength": strength,
            "start_percent": 0.0, "end_percent": end, "layer_schedule": CONSTANT, "layer_weights": "",
            "resize_mode": "crop_and_resize"}}
        prompt[f"{name}_sampler"] = {"class_type": "HunyuanDiTSampler", "inputs": {
            "model": [f"{name}_apply", 0], "positive": ["encode", 0], "negative": ["encode", 1], **SETTINGS}}
        prompt[f"{name}_save"] = {"class_type": "SaveLatent", "inputs": {
            "samples": [f"{name}_sampler", 0], "filename_prefix": f"cn_test/{name}"}}
    return prompt


def example_image() -> torch.Tensor:
    """input/example.png as ComfyUI's LoadImage gives it: RGB (alpha dropped), [1, H, W, 3] in 0..1."""
    rgb = np.asarray(Image.open(tiny_models().input / EXAMPLE_IMAGE).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb)[None]


def comfy_canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """What ComfyUI's Canny node computes (kornia's canny on the [0, 1] image, edges as 3 channels)."""
    return kornia_canny(image.movedim(-1, 1), low, high)[1].repeat(1, 3, 1, 1).movedim(1, -1)


def test_the_canny_node_draws_opencvs_edges_as_the_training_did(cn_host):
    import cv2

    shapes = Image.new("RGB", (96, 64), (30, 60, 200))
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((10, 8, 50, 56), fill=(240, 200, 40))
    draw.rectangle((58, 20, 90, 44), fill=(120, 120, 120))
    photos = np.stack([np.asarray(shapes.filter(ImageFilter.GaussianBlur(1.5))),
                       (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)])
    image = torch.from_numpy(photos).float() / 255  # a ComfyUI IMAGE, as Load Image makes it
    (edges,), _ui = call_node(HunyuanDiTCanny, image=image, low_threshold=100, high_threshold=200)
    expected = np.stack([np.repeat(cv2.Canny(p, 100, 200)[..., None], 3, axis=-1) for p in photos])
    assert edges.shape == (2, 64, 96, 3) and edges.dtype == torch.float32
    assert np.array_equal((edges.numpy() * 255).round().astype(np.uint8), expected) and expected.any()
    comfy = (kornia_canny(image.movedim(-1, 1), 0.4, 0.8)[1] > 0.5).squeeze(1).numpy()
    assert (comfy != (expected[..., 0] > 0)).mean() > 0.01  # ComfyUI's Canny: other edges
    (strict,), _ui = call_node(HunyuanDiTCanny, image=image, low_threshold=300, high_threshold=600)
    assert strict[0].sum() == 0 < edges[0].sum()  # the blurred shapes' gradients stay under 300
    with pytest.raises(InputError, match="0 <= low <= high; got low=200, high=100"):
        call_node(HunyuanDiTCanny, image=image, low_threshold=200, high_threshold=100)
    schema = HunyuanDiTCanny.GET_SCHEMA()
    assert (schema.display_name, schema.category) == ("HunyuanDiT Canny (official edges)", "HunyuanDiT/conditioning")


def test_two_branches_with_different_controls_from_one_loader_are_both_right(comfyui_server, cn_host):
    prompt = controlnet_prompt()
    entry = comfyui_server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    got = saved_latents(comfyui_server, entry, prompt)
    expected = {
        "a": core_latents([(CONTROLNET_CANNY, comfy_canny(example_image(), 0.4, 0.8), dict(strength=1.0))]),
        "b": core_latents([(CONTROLNET_CANNY, example_image(), dict(strength=0.6, end=0.5))]),
    }
    for name in ("a", "b"):
        assert max_difference(got[name], expected[name]) <= 1e-5, name
    assert max_difference(got["a"], got["b"]) > 0.01


def test_apply_without_a_vae_is_refused_by_the_server_in_one_line(comfyui_server):
    prompt = {k: v for k, v in controlnet_prompt().items() if not k.startswith("b_")}  # else branch b still runs
    del prompt["a_apply"]["inputs"]["vae"]
    status, reply = comfyui_server.queue(prompt)
    assert status == 400, reply
    (error,) = reply["node_errors"]["a_apply"]["errors"]
    assert (error["message"], error["details"]) == ("Required input is missing", "vae")
