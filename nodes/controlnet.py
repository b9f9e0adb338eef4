"""ControlNet nodes: load a HunyuanDiT ControlNet from ComfyUI's ``controlnet`` folder and add it to a model.

The Apply node changes nothing it receives (ComfyUI hands one cached output to every branch): it returns a new
model handle with one more ``(Control, vae)`` pair; the sampler encodes each hint at its own latent size
(``hunyuan_core.prepare_controls``) and passes them all to ``sample``, which sums the ControlNets' residuals.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from hunyuan_core import Control, ControlNet, check_controlnet, load_controlnet
from hunyuan_core.controlnet import RESIZE_MODES, decaying_strengths
from hunyuan_core.controlnet.preprocess import canny
from hunyuan_core.errors import InputError
from hunyuan_core.settings.devices import DTYPES

from . import host
from ._common import (
    CONDITIONING_CATEGORY,
    LOADERS,
    MODEL,
    VAE,
    ModelHandle,
    VAEHandle,
    check_percent_range,
    images_to_comfy,
    images_to_core,
    io,
    resolve_dtype,
)

CONTROLNET = io.Custom("HYDIT_CONTROLNET")
CONTROLNET_FOLDER = "controlnet"

CONSTANT = "constant"
OFFICIAL_DECAY = "official decay (0.825^(19-i))"
CUSTOM = "custom (layer_weights below)"
SCHEDULES = [CONSTANT, OFFICIAL_DECAY, CUSTOM]


def schedule_weights(schedule: str, custom: str, blocks: int) -> list[float] | None:
    """Per-layer weights (control i = residual of copied block i) for a schedule, or None for constant.

    ``custom`` is ``blocks`` numbers separated by commas or spaces."""
    if schedule == CONSTANT:
        return None
    if schedule == OFFICIAL_DECAY:
        return decaying_strengths(blocks)
    if schedule != CUSTOM:
        raise InputError(f"layer schedule '{schedule}': expected one of {', '.join(SCHEDULES)}")
    try:
        weights = [float(v) for v in custom.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"layer_weights: expected {blocks} numbers separated by commas, got {custom!r}") from None
    if len(weights) != blocks:
        raise InputError(
            f"layer_weights: this ControlNet has {blocks} blocks, so {blocks} weights are needed; got {len(weights)}"
        )
    return weights


class HunyuanDiTControlNetLoader(io.ComfyNode):
    """A HunyuanDiT ControlNet (official v1.1/v1.2, community, or diffusers-format file)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTControlNetLoader",
            display_name="HunyuanDiT Load ControlNet",
            category=LOADERS,
            description=(
                "Loads a HunyuanDiT ControlNet: official canny/depth/pose (v1.1 or v1.2), community tile/inpaint/"
                "lineart, or a diffusers-format file. Its release must match the DiT's."
            ),
            inputs=[
                io.Combo.Input("controlnet_name", options=host.get_filename_list(CONTROLNET_FOLDER), tooltip=(
                    "A file in models/controlnet/ (e.g. hunyuandit/pytorch_model_canny_distill.pt, or a diffusers "
                    "diffusion_pytorch_model.safetensors)."
                )),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=(
                    "Weight precision. auto: fp16 on GPUs (the official precision), fp32 on CPU."
                )),
            ],
            outputs=[CONTROLNET.Output(display_name="controlnet", tooltip="The ControlNet.")],
        )

    @classmethod
    def execute(cls, controlnet_name: str, dtype: str) -> io.NodeOutput:
        path = host.get_full_path(CONTROLNET_FOLDER, controlnet_name)
        controlnet = load_controlnet(path, device=host.offload_device(), dtype=resolve_dtype(dtype, host.torch_device()))
        return io.NodeOutput(controlnet)


class HunyuanDiTControlNetApply(io.ComfyNode):
    """Adds a ControlNet with its hint image to the model; chain several (their residuals are summed)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTControlNetApply",
            display_name="HunyuanDiT Apply ControlNet",
            category=CONDITIONING_CATEGORY,
            description=(
                "Guides the image with a ControlNet and a hint image (canny edges, depth, pose...). Chain several; "
                "the model coming in is left as it is for other branches of the graph."
            ),
            inputs=[
                MODEL.Input("model", tooltip="The DiT from a HunyuanDiT loader, LoRA or Apply node."),
                CONTROLNET.Input("controlnet", tooltip="From HunyuanDiT Load ControlNet."),
                io.Image.Input("image", tooltip=(
                    "The hint (e.g. from Canny or any preprocessor), resized to the sampler's size. One image is "
                    "used for every image of the batch."
                )),
                VAE.Input("vae", tooltip="The SDXL VAE that encodes the hint, as in the official pipeline."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip=(
                    "How strongly the hint steers the image (1 = as trained, 0 = off)."
                )),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the steps after which the ControlNet starts (0 = from the first step)."
                )),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the steps after which it stops (1 = to the last step); outside the range it "
                    "does not run at all."
                )),
                io.Combo.Input("layer_schedule", options=SCHEDULES, default=CONSTANT, tooltip=(
                    "Per-layer weights times strength: constant, the official README's decay (deep layers weaker), "
                    "or your own list below."
                )),
                io.String.Input("layer_weights", default="", tooltip=(
                    "For the custom schedule: one weight per ControlNet block (19 for the released ones), "
                    "separated by commas; block 0 first."
                )),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop_and_resize", tooltip=(
                    "How the hint is fitted to the sampler's size: crop_and_resize (cover, centre crop: official "
                    "default), resize (stretch) or resize_and_fill (fit, pad)."
                )),
            ],
            outputs=[MODEL.Output(display_name="model", tooltip="The DiT with this ControlNet added.")],
        )

    @classmethod
    def execute(cls, model: ModelHandle, controlnet: ControlNet, image: torch.Tensor, vae: VAEHandle,
                strength: float, start_percent: float, end_percent: float, layer_schedule: str, layer_weights: str,
                resize_mode: str) -> io.NodeOutput:
        check_controlnet(controlnet, model.dit)
        check_percent_range("ControlNet", start_percent, end_percent)
        weights = schedule_weights(layer_schedule, layer_weights, len(controlnet.blocks))
        control = Control(controlnet, images_to_core(image),
                          strength=strength if weights is None else [strength * w for w in weights],
                          start=start_percent, end=end_percent, resize_mode=resize_mode)
        return io.NodeOutput(replace(model, controls=(*model.controls, (control, vae.vae))))


class HunyuanDiTCanny(io.ComfyNode):
    """Canny edges made as the official ControlNets' training hints were (``cv2.Canny`` on the RGB picture)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTCanny",
            display_name="HunyuanDiT Canny (official edges)",
            category=CONDITIONING_CATEGORY,
            description=(
                "White edges on black exactly as the official canny ControlNets were trained on (OpenCV's Canny, "
                "thresholds 100/200). ComfyUI's own Canny node draws different edges. Needs opencv-python-headless."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The picture whose edges guide the image."),
                io.Int.Input("low_threshold", default=100, min=0, max=1000, tooltip=(
                    "Gradients below this are never edges (official: 100)."
                )),
                io.Int.Input("high_threshold", default=200, min=0, max=1000, tooltip=(
                    "Gradients above this always are; between the two only when joined to one (official: 200)."
                )),
            ],
            outputs=[io.Image.Output(display_name="edges", tooltip="The hint for HunyuanDiT Apply ControlNet.")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, low_threshold: int, high_threshold: int) -> io.NodeOutput:
        return io.NodeOutput(images_to_comfy(canny(images_to_core(image), low_threshold, high_threshold)))


NODES = [HunyuanDiTControlNetLoader, HunyuanDiTControlNetApply, HunyuanDiTCanny]
