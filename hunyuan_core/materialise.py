"""Build a module on the meta device and assign its weights, cast once: no random init, no second copy."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .errors import ModelFileError


def build_with_weights(
    factory: Callable[[], nn.Module],
    sd: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    what: str,
    warn_unexpected: bool = False,
) -> nn.Module:
    """``factory()`` on the meta device, then ``sd``'s tensors moved to ``device`` in ``dtype`` (floating point
    only) and assigned. Tensors shared under two names (tied weights) are cast once. Missing weights raise
    ModelFileError saying how many and which; extra ones are ignored (with a warning if asked)."""
    with torch.device("meta"):
        model = factory()
    expected = list(model.state_dict())
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ModelFileError(
            f"{what}: weights incomplete: {len(missing)} of {len(expected)} expected tensors are missing "
            f"(e.g. {', '.join(missing[:3])}); found {len(sd)} tensors such as {', '.join(list(sd)[:3]) or 'none'}"
        )
    if warn_unexpected:
        extra = sorted(set(sd) - set(expected))
        if extra:
            warnings.warn(f"{what}: ignoring {len(extra)} tensors that are not part of the model, e.g. {', '.join(extra[:4])}")
    cast: dict[int, torch.Tensor] = {}
    for k in expected:
        t = sd[k]
        if id(t) not in cast:
            cast[id(t)] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
    try:
        model.load_state_dict({k: cast[id(sd[k])] for k in expected}, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[1:4])
        raise ModelFileError(f"{what}: weights do not fit the model's configuration: {detail}") from None
    return model.requires_grad_(False).eval()
