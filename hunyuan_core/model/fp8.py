"""fp8 weight storage: Linear weights kept in 8 bits and cast to the compute dtype per layer, per call.

Only the large projections are stored in fp8: the DiT's block Linears (96 % of its weights) and mT5's block
Linears except ``wo`` (transformers casts ``wo``'s input to ``wo``'s own dtype). Norms, embeddings, the
pooler, the timestep/text/size embedders and the final layer stay in 16 bits, like the layers diffusers'
layerwise casting skips (``pos_embed``, ``norm``, ``pooler``). The cast makes the result approximate; the
error is measured by ``bench/gpu_check.py`` and bounded in README.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

WEIGHT_DTYPES: dict[str, torch.dtype] = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
FP8_DTYPES = tuple(WEIGHT_DTYPES.values())
# Where each model's fp8 Linears live, and the Linear names inside that stay in 16 bits.
FP8_PLACES: dict[str, tuple[str, tuple[str, ...]]] = {"dit": ("blocks.", ()), "mt5": ("encoder.block.", ("wo",))}


class FP8Linear(nn.Linear):
    """A Linear whose weight is stored in fp8 (bias in the compute dtype) and upcast to the input's dtype for
    each call; the state dict keeps ``weight``/``bias`` as a plain Linear's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias)


def resolve_weight_dtype(weight_dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``None`` (weights in the compute dtype) or one of :data:`WEIGHT_DTYPES` by name or dtype."""
    if weight_dtype is None or weight_dtype in FP8_DTYPES:
        return weight_dtype
    if isinstance(weight_dtype, str) and weight_dtype in WEIGHT_DTYPES:
        return WEIGHT_DTYPES[weight_dtype]
    raise InputError(f"weight_dtype must be None or one of {', '.join(WEIGHT_DTYPES)}; got {weight_dtype!r}")


def store_fp8(model: nn.Module, dtype: torch.dtype, place: str) -> int:
    """Replace the Linears of ``model`` under ``FP8_PLACES[place]`` by :class:`FP8Linear` with ``dtype`` weights
    (rounded once, to nearest); returns how many were replaced. Other weights are left untouched."""
    under, keep = FP8_PLACES[place]
    count = 0
    for name, child in list(model.named_modules()):
        parent_name, _, leaf = name.rpartition(".")
        if type(child) is not nn.Linear or not name.startswith(under) or leaf in keep:
            continue
        with torch.device("meta"):
            fp8 = FP8Linear(child.in_features, child.out_features, bias=child.bias is not None)
        fp8.weight = nn.Parameter(child.weight.detach().to(dtype), requires_grad=False)
        fp8.bias = child.bias
        setattr(model.get_submodule(parent_name), leaf, fp8)
        count += 1
    return count


def store_weights(weight_dtype: str | torch.dtype | None, dit: nn.Module | None = None,
                  text_encoder: object | None = None) -> None:
    """Store a DiT's and a text encoder's mT5 block Linears in ``weight_dtype`` (None: leave them as loaded)."""
    storage = resolve_weight_dtype(weight_dtype)
    if storage is None:
        return
    if dit is not None:
        store_fp8(dit, storage, "dit")
    if text_encoder is not None:
        store_fp8(text_encoder.mt5, storage, "mt5")


def dequantise_scaled_fp8(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's "scaled fp8" files (a ``scaled_fp8`` marker tensor, fp8 weights with a per-layer
    ``scale_weight``, optional ``scale_input``) -> plain weights ``weight * scale_weight`` in fp32 without the
    extra tensors; any other state dict is returned as it is."""
    marker = next((k for k in sd if k == "scaled_fp8" or k.endswith(".scaled_fp8")), None)
    if marker is None:
        return dict(sd)
    out = {}
    for k, t in sd.items():
        if k == marker or k.endswith((".scale_weight", ".scale_input")):
            continue
        scale = sd.get(k[: -len("weight")] + "scale_weight") if k.endswith(".weight") else None
        out[k] = t.float() * scale.float() if scale is not None else t
    return out
