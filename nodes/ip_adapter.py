"""IP-Adapter nodes: Tencent's HunyuanDiT v1.2 IP-Adapter (``ipa.pt``) with its Chinese-CLIP image encoder.

The Apply node encodes the reference image(s) once (ComfyUI caches the result, so a new seed does not
re-encode) and returns a new model handle carrying the adapter and the image prompt; the sampler attaches the
adapter to the DiT (idempotent; without an image prompt the DiT computes what it did before) and passes the
prompt to ``sample``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from hunyuan_core import ImagePrompt, IPAdapter, load_ip_adapter
from hunyuan_core.errors import InputError
from hunyuan_core.settings.devices import DTYPES
from hunyuan_core.settings.limits import MAX_IP_SCALE

from . import host
from ._common import (
    CONDITIONING_CATEGORY,
    LOADERS,
    MODEL,
    ModelHandle,
    check_percent_range,
    images_to_core,
    io,
    resolve_dtype,
)
from .memory import on_compute_device

IP_ADAPTER = io.Custom("HYDIT_IPADAPTER")
IP_ADAPTER_FOLDER = "ipadapter"  # the folder ComfyUI_IPAdapter_plus registers; ComfyUI itself has none
IMAGE_ENCODER_FOLDER = "clip_vision"
host.register_model_folder(IP_ADAPTER_FOLDER, IP_ADAPTER_FOLDER)
host.register_model_folder(IMAGE_ENCODER_FOLDER, IMAGE_ENCODER_FOLDER)

ONE_ADAPTER = (
    "this model already has an IP-Adapter image prompt: apply one IP-Adapter per model; for several reference "
    "images, batch them into one IMAGE (their embeddings are averaged)"
)


class HunyuanDiTIPAdapterLoader(io.ComfyNode):
    """The official IP-Adapter and its image encoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTIPAdapterLoader",
            display_name="HunyuanDiT Load IP-Adapter",
            category=LOADERS,
            description=(
                "Loads Tencent's HunyuanDiT v1.2 IP-Adapter (image prompts) with its Chinese-CLIP ViT-H/14 image "
                "encoder. Works with v1.2 DiTs only."
            ),
            inputs=[
                io.Combo.Input("ip_adapter_name", options=host.get_filename_list(IP_ADAPTER_FOLDER), tooltip=(
                    "The adapter in models/ipadapter/: the official ipa.pt, or a .safetensors with its keys."
                )),
                io.Combo.Input("image_encoder_name", options=host.get_filename_list(IMAGE_ENCODER_FOLDER), tooltip=(
                    "The image encoder in models/clip_vision/: the official clip_img_encoder.pt (6.75 GB training "
                    "checkpoint) or the ~1.3 GB file `hunyuan-dit convert-image-encoder` extracts from it."
                )),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=(
                    "The image encoder's precision. auto: fp16 on GPUs, fp32 on CPU. The adapter takes the DiT's."
                )),
            ],
            outputs=[IP_ADAPTER.Output(display_name="ip_adapter", tooltip="The adapter with its image encoder.")],
        )

    @classmethod
    def execute(cls, ip_adapter_name: str, image_encoder_name: str, dtype: str) -> io.NodeOutput:
        ipa = load_ip_adapter(host.get_full_path(IP_ADAPTER_FOLDER, ip_adapter_name),
                              image_encoder=host.get_full_path(IMAGE_ENCODER_FOLDER, image_encoder_name),
                              device=host.offload_device(), dtype=resolve_dtype(dtype, host.torch_device()))
        return io.NodeOutput(ipa)


class HunyuanDiTIPAdapterApply(io.ComfyNode):
    """Adds an image prompt (one or several reference images) to the model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTIPAdapterApply",
            display_name="HunyuanDiT Apply IP-Adapter",
            category=CONDITIONING_CATEGORY,
            description=(
                "Steers the image towards a reference image's content and style. The model coming in is left as "
                "it is for other branches of the graph."
            ),
            inputs=[
                MODEL.Input("model", tooltip="A v1.2 DiT from a HunyuanDiT loader, LoRA or Apply node."),
                IP_ADAPTER.Input("ip_adapter", tooltip="From HunyuanDiT Load IP-Adapter."),
                io.Image.Input("image", tooltip=(
                    "The reference image; a batch of several is one prompt (their embeddings averaged)."
                )),
                io.Float.Input("scale", default=1.0, min=0.0, max=MAX_IP_SCALE, step=0.01, tooltip=(
                    "Weight of the image prompt (official i_scale: 1; 0 = off)."
                )),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the steps after which the image prompt starts (0 = from the first step)."
                )),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the steps after which it stops (1 = to the last step)."
                )),
            ],
            outputs=[MODEL.Output(display_name="model", tooltip="The DiT with this image prompt.")],
        )

    @classmethod
    def execute(cls, model: ModelHandle, ip_adapter: IPAdapter, image: torch.Tensor, scale: float,
                start_percent: float, end_percent: float) -> io.NodeOutput:
        if model.image_prompt is not None:
            raise InputError(ONE_ADAPTER)
        check_percent_range("IP-Adapter", start_percent, end_percent)
        ip_adapter.check_fits(model.dit)
        with on_compute_device(ip_adapter.image_encoder.model, offload_device=host.offload_device()):
            embeds = ip_adapter.encode_image(images_to_core(image)).to(host.intermediate_device())
        prompt = ImagePrompt(embeds, scale=scale, start=start_percent, end=end_percent)
        return io.NodeOutput(replace(model, ip_adapter=ip_adapter, image_prompt=prompt))


NODES = [HunyuanDiTIPAdapterLoader, HunyuanDiTIPAdapterApply]
