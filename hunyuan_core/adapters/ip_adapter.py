"""Tencent's IP-Adapter for Hunyuan-DiT v1.2: image prompts through a decoupled cross-attention branch.

``ipa.pt`` holds only the adapter, in the DiT's own namespace (reference/wave2/ipadapter.md §3): a projection of
the 1024-d CLIP image embedding to 8 tokens (``ip_adapter_clip_len_trans_block``) and their LayerNorm
(``ip_adapter_img_norm_cond``), then per block ``blocks.{i}.attn2.kv_proj_ip_adapter`` and ``k_norm_ip_adapter``.
Every dimension is read off the weights. :meth:`IPAdapter.attach` grafts them onto a loaded DiT, whose forward
then takes ``image_embeds`` / ``i_scale`` / ``t_scale`` (see ``HunyuanDiT.forward``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ..errors import InputError, ModelFileError
from ..formats.files import StateDict, read_checkpoint, tensor_shape, unwrap_state_dict
from ..formats.keys import DIT_PREFIXES, strip_prefix
from ..formats.kinds import describe_weights
from ..model.dit import HunyuanDiT
from ..model.materialise import first_non_finite
from ..settings.devices import resolve_device, resolve_dtype
from .image_encoder import ImageEncoder, load_image_encoder

TRANS = "ip_adapter_clip_len_trans_block"
NORM = "ip_adapter_img_norm_cond"
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.attn2\.(kv_proj_ip_adapter|k_norm_ip_adapter)\.(weight|bias)$")
_WHAT = "IP-Adapter"


@dataclass(frozen=True)
class IPAdapterShape:
    """What the adapter's weights say: embedding width, image tokens and their width (the DiT's text width),
    and the DiT it fits (depth, hidden width, attention head width)."""

    clip_dim: int
    tokens: int
    token_dim: int
    depth: int
    hidden_size: int
    head_dim: int


def _flatten(obj: object) -> dict[str, object]:
    """Nested dicts -> dotted keys (SD IP-Adapter ``.bin`` files nest ``image_proj`` / ``ip_adapter``)."""
    if not isinstance(obj, Mapping):
        return {}
    out: dict[str, object] = {}
    for k, v in obj.items():
        out.update({f"{k}.{kk}": vv for kk, vv in _flatten(v).items()} if isinstance(v, Mapping) else {str(k): v})
    return out


def read_ip_adapter_weights(path: str | os.PathLike) -> StateDict:
    """The adapter tensors (official names) from ``ipa.pt`` or a ``.safetensors`` with the same keys; a wrapper
    prefix (``module.``, ``model.`` ...) is dropped. Any other file is refused, naming what it looks like."""
    where = f"{_WHAT} '{path}'"
    obj = read_checkpoint(path, _WHAT)
    keys = _flatten(obj)
    if not any(TRANS in k for k in keys):
        kind = describe_weights(keys)
        found = f"this looks like {kind}" if kind else f"found keys such as {', '.join(list(keys)[:4]) or 'none'}"
        raise ModelFileError(f"{where}: not a Hunyuan-DiT IP-Adapter ({found}); expected Tencent's ipa.pt with "
                             f"keys {TRANS}.weight, blocks.0.attn2.kv_proj_ip_adapter.weight")
    sd = unwrap_state_dict(obj, ("state_dict", "module"), where)
    prefix = next((p for p in DIT_PREFIXES if f"{p}{TRANS}.weight" in sd), "")
    return strip_prefix(sd, prefix)


def adapter_shape(sd: Mapping[str, torch.Tensor], where: str = _WHAT) -> IPAdapterShape:
    """Dimensions from the weights; incomplete or inconsistent files are refused naming the tensor."""
    projected, clip_dim = tensor_shape(sd, f"{TRANS}.weight", 2, where)
    (token_dim,) = tensor_shape(sd, f"{NORM}.weight", 1, where)
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))}
    depth = max(blocks, default=-1) + 1
    missing = [f"blocks.{i}.attn2.{name}.{part}" for i in range(depth) for name in ("kv_proj_ip_adapter",
               "k_norm_ip_adapter") for part in ("weight", "bias") if f"blocks.{i}.attn2.{name}.{part}" not in sd]
    missing += [k for k in (f"{TRANS}.bias", f"{NORM}.bias") if k not in sd]
    if depth == 0 or missing:
        raise ModelFileError(f"{where}: incomplete IP-Adapter: {len(missing) or 'all'} block tensors missing "
                             f"(e.g. {', '.join(missing[:3]) or 'blocks.0.attn2.kv_proj_ip_adapter.weight'})")
    kv_out, kv_in = tensor_shape(sd, "blocks.0.attn2.kv_proj_ip_adapter.weight", 2, where)
    (head_dim,) = tensor_shape(sd, "blocks.0.attn2.k_norm_ip_adapter.weight", 1, where)
    if projected % token_dim or kv_in != token_dim or kv_out % 2 or (kv_out // 2) % head_dim:
        raise ModelFileError(
            f"{where}: inconsistent IP-Adapter shapes: {TRANS} gives {projected} features for {token_dim}-wide "
            f"tokens (must divide), kv_proj_ip_adapter takes {kv_in} (expected {token_dim}) and gives {kv_out} "
            f"(2 x a multiple of the key norm's {head_dim})"
        )
    return IPAdapterShape(clip_dim, projected // token_dim, token_dim, depth, kv_out // 2, head_dim)


class IPAdapter:
    """The adapter's weights (on the CPU, as read) plus, optionally, the image encoder that makes its input.

    ``attach(dit)`` gives a DiT the image branch; ``encode_image(images)`` turns reference images into the
    ``[1, clip_dim]`` embedding that ``dit(..., image_embeds=...)`` and :class:`~hunyuan_core.ImagePrompt` take.
    """

    def __init__(self, weights: Mapping[str, torch.Tensor], image_encoder: ImageEncoder | None = None,
                 where: str = _WHAT):
        self.shape = adapter_shape(weights, where)
        self.weights = dict(weights)
        self.image_encoder = image_encoder
        self.where = where

    def check_fits(self, dit: HunyuanDiT) -> None:
        """Refuse a DiT the adapter was not made for (not v1.2-shaped), naming both shapes."""
        if not isinstance(dit, HunyuanDiT):
            raise InputError(f"attach takes a loaded Hunyuan-DiT (pipe.dit); got {type(dit).__name__}")
        cfg, s = dit.config, self.shape
        has = (cfg.depth, cfg.hidden_size, cfg.head_dim, cfg.text_dim)
        needs = (s.depth, s.hidden_size, s.head_dim, s.token_dim)
        if cfg.version != "1.2" or has != needs:
            family = "v1.2" if cfg.version == "1.2" else "v1.0/v1.1 (size and style conditioned)"
            raise ModelFileError(
                f"{self.where} fits a Hunyuan-DiT v1.2 with {s.depth} blocks, width {s.hidden_size}, head width "
                f"{s.head_dim} and {s.token_dim}-wide text states; this DiT is {family} with {cfg.depth} blocks, "
                f"width {cfg.hidden_size}, head width {cfg.head_dim}, {cfg.text_dim}-wide text states"
            )

    def attach(self, dit: HunyuanDiT) -> HunyuanDiT:
        """Add the adapter to ``dit`` in place (its dtype and device); attaching the same adapter again does
        nothing, another adapter replaces it. Until ``image_embeds`` is passed, the DiT computes as before."""
        self.check_fits(dit)
        if getattr(dit, "ip_adapter", None) is self:
            return dit
        weights = {k: v.to(device=dit.device, dtype=dit.dtype) for k, v in self.weights.items()}
        bad = first_non_finite(weights.items())
        if bad is not None:
            raise ModelFileError(f"{self.where}: weight '{bad}' holds NaN or Inf values (as {dit.dtype}); the file "
                                 "is corrupt: download it again")
        with torch.device("meta"):
            dit.add_image_branch(self.shape.clip_dim, self.shape.tokens)
        dit.load_state_dict(weights, strict=False, assign=True)
        dit.requires_grad_(False)
        dit.ip_adapter = self
        return dit

    def encode_image(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """The reference image(s) as one L2-normalised embedding ``[1, clip_dim]`` (several are averaged, see
        :meth:`ImageEncoder.__call__`)."""
        if self.image_encoder is None:
            raise InputError("this IP-Adapter has no image encoder: pass image_encoder= (clip_img_encoder.pt or "
                             "its extracted .safetensors) to load_ip_adapter")
        embeds = self.image_encoder(images)
        if embeds.shape[1] != self.shape.clip_dim:
            raise ModelFileError(f"the image encoder makes {embeds.shape[1]}-d embeddings; {self.where} takes "
                                 f"{self.shape.clip_dim}-d ones")
        return embeds


def load_ip_adapter(path: str | os.PathLike, image_encoder: str | os.PathLike | ImageEncoder | nn.Module | None = None,
                    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> IPAdapter:
    """Read ``ipa.pt`` (or a ``.safetensors`` with its keys) and optionally the image encoder: a path to the
    official ``clip_img_encoder.pt`` or the extracted tower, or a ready encoder module. ``device`` / ``dtype`` are
    the encoder's (default: the default device; float32 on CPU, float16 on GPUs)."""
    encoder = None
    if image_encoder is not None:
        dev = resolve_device(device)
        encoder = load_image_encoder(image_encoder, dev, resolve_dtype(dtype, dev))
    return IPAdapter(read_ip_adapter_weights(path), encoder, f"{_WHAT} '{path}'")
