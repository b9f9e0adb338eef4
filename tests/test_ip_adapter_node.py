"""The IP-Adapter nodes in the real ComfyUI (in its process, the V3 nodes run as ComfyUI's executor runs them).

The reference for every result is the core on its own: the same tiny files loaded with ``hunyuan_core``,
``attach`` + ``encode_image`` + ``ImagePrompt`` + ``sample(image_prompt=...)`` with the settings the nodes were given.
"""

from __future__ import annotations

import pytest
import torch
from comfy_host import require_comfyui
from comfy_host import run_node as call_node
from comfy_models import (
    ALL_IN_ONE,
    CONTROLNET_CANNY,
    IMAGE_ENCODER,
    IP_ADAPTER,
    LORA_PORCELAIN,
    OFFICIAL_V11,
    tiny_models,
)

require_comfyui()

from hunyuan_core import (  # noqa: E402
    Control,
    HunyuanError,
    ImagePrompt,
    apply_loras,
    load_controlnet,
    load_ip_adapter,
    load_lora,
    prepare_controls,
)
from hunyuan_core.errors import InputError  # noqa: E402
from hunyuan_core.loaders import load_parts  # noqa: E402
from hunyuan_core.model.vae import SDXL_SCALING_FACTOR  # noqa: E402
from hunyuan_core.sampling.sample import sample as core_sample  # noqa: E402
from hunyuan_core.tiny import tiny_bert_vocab_path  # noqa: E402
from nodes.conditioning import HunyuanDiTTextEncode  # noqa: E402
from nodes.controlnet import CONSTANT, HunyuanDiTControlNetApply, HunyuanDiTControlNetLoader  # noqa: E402
from nodes.ip_adapter import ONE_ADAPTER, HunyuanDiTIPAdapterApply, HunyuanDiTIPAdapterLoader  # noqa: E402
from nodes.loaders import HunyuanDiTCheckpointLoader, HunyuanDiTModelLoader  # noqa: E402
from nodes.lora import HunyuanDiTLoraLoader  # noqa: E402
from nodes.sampling import CUSTOM, HunyuanDiTSampler  # noqa: E402

PROMPT = "一只可爱的猫"
SETTINGS = dict(resolution=CUSTOM, width=64, height=80, steps=3, cfg=6.0, guidance_rescale=0.0,
                sampler_name="ddim", seed=1, batch_size=1, denoise=1.0)
LOADER = dict(ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto")
TOLERANCE = 1e-6  # relative, fp32: node and core run the same computation


def reference(seed: int, height: int = 40, width: int = 56, batch: int = 1) -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, 3] in 0..1."""
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def loader_outputs(with_vae: bool = False):
    (model, text_encoder, vae, _info), _ui = call_node(HunyuanDiTCheckpointLoader, **LOADER)
    (positive, negative), _ui = call_node(HunyuanDiTTextEncode, text_encoder=text_encoder, positive=PROMPT, negative="")
    return (model, (positive, negative), vae) if with_vae else (model, (positive, negative))


def load_ipa():
    (ipa,), _ui = call_node(HunyuanDiTIPAdapterLoader, ip_adapter_name=IP_ADAPTER, image_encoder_name=IMAGE_ENCODER,
                            dtype="auto")
    return ipa


def apply(model, ipa, image, scale=1.0, start=0.0, end=1.0):
    (out,), _ui = call_node(HunyuanDiTIPAdapterApply, model=model, ip_adapter=ipa, image=image, scale=scale,
                            start_percent=start, end_percent=end)
    return out


def sample(model, conditioning) -> torch.Tensor:
    (latent,), _ui = call_node(HunyuanDiTSampler, model=model, positive=conditioning[0], negative=conditioning[1],
                               **SETTINGS)
    return latent["samples"]


def core_latents(image: torch.Tensor | None, lora: float = 0.0, hint: torch.Tensor | None = None,
                 **prompt) -> torch.Tensor:
    """The core alone: fresh loads of the same files, the adapter attached and the image encoded there (with the
    porcelain LoRA at strength ``lora`` merged, and the canny ControlNet on ``hint`` when given); unscaled."""
    models = tiny_models().models
    path = models / ALL_IN_ONE
    parts = load_parts(path, bert_vocab=tiny_bert_vocab_path(path.parent))
    positive, negative = (parts.text_encoder.encode([text]) for text in (PROMPT, ""))
    image_prompt, controls = None, []
    with torch.inference_mode():
        if lora:
            apply_loras(parts.dit, [(load_lora(models / "loras" / LORA_PORCELAIN), lora)])
        if hint is not None:
            control = Control(load_controlnet(models / "controlnet" / CONTROLNET_CANNY), hint.permute(0, 3, 1, 2))
            controls = prepare_controls([control], parts.vae, SETTINGS["width"], SETTINGS["height"])
        if image is not None:
            ipa = load_ip_adapter(models / "ipadapter" / IP_ADAPTER, image_encoder=models / "clip_vision" / IMAGE_ENCODER)
            ipa.attach(parts.dit)
            image_prompt = ImagePrompt(ipa.encode_image(image.permute(0, 3, 1, 2)), **prompt)
        scaled = core_sample(parts.dit, positive, negative, width=SETTINGS["width"], height=SETTINGS["height"],
                             steps=SETTINGS["steps"], guidance_scale=SETTINGS["cfg"], sampler=SETTINGS["sampler_name"],
                             seed=SETTINGS["seed"], image_prompt=image_prompt, controls=controls)
    return scaled / SDXL_SCALING_FACTOR


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the largest value of ``b``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture()
def ipa_host(comfyui):
    """The pack inside the in-process ComfyUI, whose models/ipadapter/ and clip_vision/ hold the tiny files."""
    return comfyui


def test_the_nodes_are_declared_like_the_packs_others(ipa_host):
    loader, apply_ = HunyuanDiTIPAdapterLoader.GET_SCHEMA(), HunyuanDiTIPAdapterApply.GET_SCHEMA()
    assert (loader.node_id, loader.display_name, loader.category) == (
        "HunyuanDiTIPAdapterLoader", "HunyuanDiT Load IP-Adapter", "HunyuanDiT/loaders")
    assert (apply_.node_id, apply_.display_name, apply_.category) == (
        "HunyuanDiTIPAdapterApply", "HunyuanDiT Apply IP-Adapter", "HunyuanDiT/conditioning")
    inputs = {i.id: i for i in loader.inputs}
    assert IP_ADAPTER in inputs["ip_adapter_name"].options and IMAGE_ENCODER in inputs["image_encoder_name"].options
    assert [i.id for i in apply_.inputs] == ["model", "ip_adapter", "image", "scale", "start_percent", "end_percent"]
    assert all(i.tooltip for i in (*loader.inputs, *apply_.inputs))


def test_apply_samples_like_the_core_and_the_incoming_model_samples_as_before(ipa_host):
    model, conditioning = loader_outputs()
    base = sample(model, conditioning)
    ipa = load_ipa()
    image = reference(0)

    prompted = apply(model, ipa, image, scale=0.7, start=0.0, end=0.7)
    assert model.image_prompt is None and prompted.dit is model.dit and prompted.image_prompt.scale == 0.7
    got = sample(prompted, conditioning)
    assert max_difference(got, core_latents(image, scale=0.7, start=0.0, end=0.7)) <= TOLERANCE
    assert max_difference(got, base) > 0.01  # the image prompt does change the result
    # the adapter is attached to the shared DiT now; the branch without an image prompt is exactly as before
    assert torch.equal(sample(model, conditioning), base)


def test_several_reference_images_are_one_prompt_like_the_core(ipa_host):
    model, conditioning = loader_outputs()
    images = reference(1, batch=3)
    got = sample(apply(model, load_ipa(), images, scale=1.0), conditioning)
    assert max_difference(got, core_latents(images)) <= TOLERANCE


def test_a_v11_dit_and_a_second_adapter_are_refused_in_one_line(ipa_host):
    (v11, _info), _ui = call_node(HunyuanDiTModelLoader, model_name=OFFICIAL_V11, variant="auto", dtype="auto")
    ipa = load_ipa()
    with pytest.raises(HunyuanError) as error:
        apply(v11, ipa, reference(0))
    assert "\n" not in str(error.value) and "v1.2" in str(error.value)

    model, _ = loader_outputs()
    with pytest.raises(InputError, match="already has an IP-Adapter image prompt"):
        apply(apply(model, ipa, reference(0)), ipa, reference(1))
    assert ONE_ADAPTER.count("\n") == 0


def test_with_a_lora_and_a_controlnet_the_sampler_runs_all_three_like_the_core(ipa_host):
    model, conditioning, vae = loader_outputs(with_vae=True)
    (lora_model, _), _ui = call_node(HunyuanDiTLoraLoader, model=model, lora_name=LORA_PORCELAIN, strength=0.8)
    (controlnet,), _ui = call_node(HunyuanDiTControlNetLoader, controlnet_name=CONTROLNET_CANNY, dtype="auto")
    hint = reference(5, 64, 64)
    (controlled,), _ui = call_node(HunyuanDiTControlNetApply, model=lora_model, controlnet=controlnet, image=hint,
                                   vae=vae, strength=1.0, start_percent=0.0, end_percent=1.0, layer_schedule=CONSTANT,
                                   layer_weights="", resize_mode="crop_and_resize")
    image = reference(6)
    everything = apply(controlled, load_ipa(), image, scale=0.8)
    assert (len(everything.loras), len(everything.controls)) == (1, 1) and everything.image_prompt is not None

    got = sample(everything, conditioning)
    assert max_difference(got, core_latents(image, lora=0.8, hint=hint, scale=0.8)) <= 1e-5
    assert max_difference(got, sample(controlled, conditioning)) > 0.01
