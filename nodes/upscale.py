"""Super-resolution nodes: load an ESRGAN-family (or any spandrel) model, upscale IMAGEs tile by tile.

The upscale node also takes ComfyUI's own UPSCALE_MODEL (a spandrel descriptor from "Load Upscale
Model"), so either loader feeds it. ComfyUI's model management loads the network (``nodes/memory.py``).
"""

from __future__ import annotations

import torch

from hunyuan_core.errors import InputError
from hunyuan_core.settings.devices import DTYPES
from hunyuan_core.settings.limits import MAX_UPSCALE_FACTOR
from hunyuan_core.upscaler import Upscaler, load_upscaler

from . import host
from ._common import UPSCALE_CATEGORY, images_to_comfy, images_to_core, io, resolve_dtype
from .memory import on_compute_device

UPSCALE_MODEL = io.Custom("HYDIT_UPSCALE_MODEL")
UPSCALE_FOLDER = "upscale_models"


class HunyuanDiTUpscaleModelLoader(io.ComfyNode):
    """models/upscale_models/<file> → HYDIT_UPSCALE_MODEL, architecture and scale read from the weights."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTUpscaleModelLoader",
            display_name="HunyuanDiT Load Upscale Model",
            category=UPSCALE_CATEGORY,
            description="Loads a super-resolution model and reports its architecture and scale.",
            inputs=[
                io.Combo.Input("model_name", options=host.get_filename_list(UPSCALE_FOLDER), tooltip=(
                    "A file in models/upscale_models: ESRGAN/Real-ESRGAN (RealESRGAN_x4plus, x2plus, "
                    "x4plus_anime_6B, 4x-UltraSharp), Real-ESRGAN compact (realesr-general-x4v3, "
                    "realesr-animevideov3), or any architecture spandrel knows."
                )),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=(
                    "Weight precision. auto: fp16 on GPUs, fp32 on CPU; a precision the architecture "
                    "cannot run in falls back to fp32."
                )),
            ],
            outputs=[UPSCALE_MODEL.Output(display_name="upscale_model", tooltip=(
                "The super-resolution model, for HunyuanDiT Upscale Image."
            ))],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model_name: str, dtype: str) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        path = host.get_full_path(UPSCALE_FOLDER, model_name)
        upscaler = load_upscaler(path, device=host.offload_device(), dtype=resolve_dtype(dtype, host.torch_device()))
        dtype_name = str(upscaler.dtype).replace("torch.", "")
        info = f"{upscaler.architecture} x{upscaler.scale} ({dtype_name}) from {model_name}"
        host.show_text(unique_id, info)
        return io.NodeOutput(upscaler, ui={"text": [info]})


def as_upscaler(model: object) -> Upscaler:
    """Our HYDIT_UPSCALE_MODEL as it is, or ComfyUI's UPSCALE_MODEL (a spandrel descriptor) wrapped."""
    if isinstance(model, Upscaler):
        return model
    if hasattr(model, "model") and hasattr(model, "scale") and hasattr(model, "size_requirements"):
        return Upscaler.from_spandrel(model)
    raise InputError(
        f"upscale_model: expected {UPSCALE_MODEL.io_type} or ComfyUI's UPSCALE_MODEL; got {type(model).__name__}"
    )


class HunyuanDiTUpscale(io.ComfyNode):
    """IMAGE → IMAGE at the model's scale (or a chosen one), in feathered tiles; alpha is kept."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTUpscale",
            display_name="HunyuanDiT Upscale Image",
            category=UPSCALE_CATEGORY,
            description="Upscales images with a super-resolution model, tile by tile with seamless blending.",
            inputs=[
                io.MultiType.Input("upscale_model", types=[UPSCALE_MODEL, io.UpscaleModel], tooltip=(
                    "From HunyuanDiT Load Upscale Model, or ComfyUI's Load Upscale Model."
                )),
                io.Image.Input("image", tooltip="Images to upscale (RGB or RGBA; alpha is resized smoothly)."),
                io.Int.Input("tile", default=512, min=64, max=8192, step=8, tooltip=(
                    "Tile side in input pixels; GPU memory grows with it. Halved automatically on out-of-memory."
                )),
                io.Int.Input("overlap", default=32, min=0, max=1024, step=8, tooltip=(
                    "Input pixels shared by neighbouring tiles and blended; more hides seams better."
                )),
                io.Float.Input("scale", default=0.0, min=0.0, max=MAX_UPSCALE_FACTOR, step=0.05, tooltip=(
                    "Final scale. 0: the model's own (x4: 1024 px becomes 4096 px); other values resize "
                    "after super-resolution (2 with an x4 model: 2048 px)."
                )),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The upscaled images.")],
        )

    @classmethod
    def execute(cls, upscale_model: object, image: torch.Tensor, tile: int, overlap: int, scale: float) -> io.NodeOutput:
        upscaler = as_upscaler(upscale_model)
        total = upscaler.count_tiles(image.shape[0], image.shape[1], image.shape[2], tile, overlap)
        # the network itself (also when ComfyUI's UPSCALE_MODEL is wrapped anew each run): one patcher per network
        with on_compute_device(upscaler.model, offload_device=host.offload_device(),
                               memory_required=upscaler.memory_estimate(tile)):
            out = upscaler(images_to_core(image, keep_alpha=True), tile=tile, overlap=overlap, scale=scale or None,
                           progress=host.progress_callback(total), cancel=host.cancel_callback())
        return io.NodeOutput(images_to_comfy(out))


NODES = [HunyuanDiTUpscaleModelLoader, HunyuanDiTUpscale]
