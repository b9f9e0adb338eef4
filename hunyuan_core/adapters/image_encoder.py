"""The IP-Adapter's image encoder: the Chinese-CLIP ViT-H/14 visual tower as transformers'
``CLIPVisionModelWithProjection``, its official weights (``visual.*``) and the official preprocessing.

Tencent ships the tower inside a 6.75 GB training checkpoint (``clip_img_encoder.pt``: ``state_dict`` with
``module.`` prefixes, the text tower and more). Only the ``visual.*`` tensors are read: a zip checkpoint is
memory-mapped, so the rest is never loaded. :func:`convert_image_encoder` keeps those tensors under their
official names in a ~1.3 GB ``.safetensors`` file (fp16 by default), which :func:`load_image_encoder` reads as well.
The tower takes 632 M parameters: 2.5 GB in float32 (the official precision), 1.3 GB in float16.
Reference: reference/wave2/ipadapter.md §2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import InputError, ModelFileError
from ..formats.files import StateDict, read_checkpoint, tensor_shape, unwrap_state_dict
from ..formats.keys import strip_prefix
from ..formats.kinds import describe_weights
from ..formats.writing import save_safetensors
from ..images import pil_to_tensor
from ..model.materialise import build_with_weights, materialise_buffers
from ..outputs import check_not_input

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig

# OpenAI CLIP's normalisation, which the official pipeline and training use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 80  # ViT-H-14.json "vision_head_width": 1280 / 80 = 16 heads
VISUAL = "visual."
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.")
# Official tower names -> transformers' (per-block parts after "transformer.resblocks.{i}.").
_GLOBAL = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias",
}
_LAYER = {
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_FUSED_QKV = ("attn.in_proj_", "attn.Wqkv.")  # nn.MultiheadAttention's name, and cn_clip's flash-attention one


def visual_weights(sd: Mapping[str, torch.Tensor], where: str) -> StateDict:
    """The ``visual.*`` tensors (official names, prefix kept) of a training checkpoint's state dict or of an
    extracted file; DeepSpeed's ``module.`` prefix is dropped. Anything else is refused, naming what it is."""
    if any(k.startswith("module.") for k in sd):
        sd = strip_prefix(sd, "module.")
    visual = {k: v for k, v in sd.items() if k.startswith(VISUAL)}
    if f"{VISUAL}conv1.weight" not in visual or f"{VISUAL}proj" not in visual:
        kind = describe_weights(sd)
        found = f"this looks like {kind}" if kind else f"found {len(sd)} tensors such as {', '.join(list(sd)[:4])}"
        raise ModelFileError(f"{where}: not the IP-Adapter's CLIP image encoder ({found}); expected the official "
                             "clip_img_encoder.pt or its extracted tower with keys visual.conv1.weight, visual.proj")
    return visual


def read_image_encoder_weights(path: str | os.PathLike) -> StateDict:
    """The visual tower's tensors from ``clip_img_encoder.pt`` (memory-mapped) or an extracted ``.safetensors``."""
    what = "IP-Adapter image encoder"
    return visual_weights(unwrap_state_dict(read_checkpoint(path, what), ("state_dict",), f"{what} '{path}'"),
                          f"{what} '{path}'")


def vision_config(visual: Mapping[str, torch.Tensor], where: str = "image encoder") -> CLIPVisionConfig:
    """A ``CLIPVisionConfig`` read off the tower's shapes (ViT-H/14: 1280 wide, 32 layers, 16 heads, patch 14,
    224 px, projection 1024, quick GELU, LayerNorm eps 1e-5 as ``nn.LayerNorm``'s default)."""
    from transformers import CLIPVisionConfig

    width, channels, patch, _ = tensor_shape(visual, f"{VISUAL}conv1.weight", 4, where)
    positions, _ = tensor_shape(visual, f"{VISUAL}positional_embedding", 2, where)
    _, projection = tensor_shape(visual, f"{VISUAL}proj", 2, where)
    layers = len({m.group(1) for k in visual if (m := _BLOCK.match(k[len(VISUAL):]))})
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1 or width % HEAD_WIDTH or layers == 0:
        raise ModelFileError(f"{where}: not a CLIP ViT tower: {positions} positions (expected a square grid + 1), "
                             f"width {width} (expected a multiple of {HEAD_WIDTH}), {layers} layers")
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=tensor_shape(visual, f"{VISUAL}transformer.resblocks.0.mlp.c_fc.weight",
                                                          2, where)[0],
        num_hidden_layers=layers, num_attention_heads=width // HEAD_WIDTH, num_channels=channels,
        image_size=grid * patch, patch_size=patch, projection_dim=projection, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def to_transformers(visual: Mapping[str, torch.Tensor]) -> StateDict:
    """Official ``visual.*`` names -> ``CLIPVisionModelWithProjection`` names (fused q/k/v split in three,
    ``proj`` [width, dim] transposed into ``visual_projection``)."""
    out: StateDict = {}
    for key, t in visual.items():
        name = key[len(VISUAL):]
        if name in _GLOBAL:
            out[_GLOBAL[name]] = t
        elif name == "proj":
            out["visual_projection.weight"] = t.t()
        elif m := _BLOCK.match(name):
            prefix, part = f"vision_model.encoder.layers.{m.group(1)}.", name[m.end():]
            fused = next((f for f in _FUSED_QKV if part.startswith(f)), None)
            if fused is not None:
                kind = part[len(fused):]  # "weight" / "bias"
                for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3)):
                    out[f"{prefix}self_attn.{proj}.{kind}"] = chunk
            elif part in _LAYER:
                out[prefix + _LAYER[part]] = t
    positions = out.get("vision_model.embeddings.position_embedding.weight")
    if positions is not None:  # a buffer that transformers < 4.31 saved with the weights
        out["vision_model.embeddings.position_ids"] = torch.arange(len(positions))[None]
    return out


class ImageEncoder:
    """Images -> L2-normalised CLIP image embeddings, preprocessed as the official pipeline does: a bicubic squash
    to the tower's size (224 x 224, no centre crop), RGB, 0..1, OpenAI CLIP mean/std."""

    def __init__(self, model: nn.Module):
        self.model = model.requires_grad_(False).eval()

    @property
    def size(self) -> int:
        return self.model.config.image_size

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    @property
    def device(self) -> torch.device:
        return self.model.visual_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual_projection.weight.dtype

    def preprocess(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """PIL image(s) or a ``[B, C, H, W]`` tensor in 0..1 -> normalised pixels ``[B, 3, size, size]`` (fp32)."""
        s = self.size
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape:
                raise InputError(f"reference images must be a [B, 3, H, W] tensor in 0..1; got {list(images.shape)}")
            if not torch.isfinite(images).all():
                raise InputError("reference images hold NaN/Inf values")
            pixels = F.interpolate(images.float().cpu(), size=(s, s), mode="bicubic", antialias=True,
                                   align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1)
        else:
            if not images or not all(isinstance(i, Image.Image) for i in images):
                raise InputError("reference images must be PIL images or a [B, 3, H, W] tensor; got "
                                 f"{type(images).__name__} {'(empty)' if not images else ''}".strip())
            if any(0 in i.size for i in images):
                raise InputError("a reference image is empty (0 pixels)")
            pixels = torch.cat([pil_to_tensor(i.resize((s, s), Image.BICUBIC).convert("RGB")) for i in images])
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @torch.no_grad()
    def embed(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """One L2-normalised embedding per image, ``[B, dim]`` float32."""
        pixels = self.preprocess(images).to(self.device, self.dtype)
        features = self.model(pixel_values=pixels).image_embeds.float()
        return features / features.norm(dim=-1, keepdim=True)

    def __call__(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """One embedding ``[1, dim]`` for the reference image(s): several images are averaged and the mean is
        L2-normalised again, because the adapter was only ever trained on unit-length embeddings."""
        mean = self.embed(images).mean(dim=0, keepdim=True)
        return mean / mean.norm(dim=-1, keepdim=True)


def build_image_encoder(visual: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype,
                        where: str = "image encoder") -> ImageEncoder:
    """An :class:`ImageEncoder` from official ``visual.*`` tensors, materialised once in ``dtype`` on ``device``."""
    from transformers import CLIPVisionModelWithProjection

    config = vision_config(visual, where)
    model = build_with_weights(lambda: CLIPVisionModelWithProjection(config), to_transformers(visual), device, dtype,
                               where)
    materialise_buffers(model, device)
    return ImageEncoder(model)


def load_image_encoder(source: str | os.PathLike | ImageEncoder | nn.Module, device: torch.device,
                       dtype: torch.dtype) -> ImageEncoder:
    """``source``: ``clip_img_encoder.pt``, an extracted ``.safetensors``, an :class:`ImageEncoder` or a ready
    ``CLIPVisionModelWithProjection`` (used as it is)."""
    if isinstance(source, ImageEncoder):
        return source
    if isinstance(source, nn.Module):
        if not hasattr(source, "visual_projection") or not hasattr(source, "config"):
            raise InputError(f"image_encoder must be a CLIPVisionModelWithProjection; got {type(source).__name__}")
        return ImageEncoder(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"image_encoder must be a file path or an encoder module; got {type(source).__name__}")
    return build_image_encoder(read_image_encoder_weights(source), device, dtype, f"image encoder '{source}'")


def convert_image_encoder(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                          dtype: torch.dtype = torch.float16) -> Path:
    """Extract the visual tower of ``clip_img_encoder.pt`` into ``out`` (.safetensors, official names, stored in
    ``dtype``); the text tower and training state stay behind, never read from the memory-mapped checkpoint."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"the extracted image encoder is written as .safetensors; got '{out.name}'")
    check_not_input(out, [src])
    visual = read_image_encoder_weights(src)
    vision_config(visual, f"image encoder '{src}'")  # refuse a tower that could not be built, before writing
    save_safetensors({k: v.to(dtype) for k, v in visual.items()}, out, overwrite=overwrite)
    return out
