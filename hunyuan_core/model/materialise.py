"""Build a module on the meta device and assign its weights, cast once: no random init, no second copy.

This is also where weights are refused that would load but give garbage: integer, boolean or complex
tensors where the model holds floating-point ones, and NaN/Inf values (checked on the materialised
tensors, in the target dtype, so an overflow of the cast is caught too).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ..errors import ModelFileError, NumericsError
from ..progress import loading_bar

_FINITE_CHUNK = 1 << 24  # values checked per pass, so a big tensor never needs a same-sized boolean copy
_ISFINITE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or Inf, or None."""
    for name, t in named:
        if not t.is_floating_point():
            continue
        flat = t.reshape(-1)
        for start in range(0, flat.numel(), _FINITE_CHUNK):
            chunk = flat[start : start + _FINITE_CHUNK]
            if not torch.isfinite(chunk if chunk.dtype in _ISFINITE_DTYPES else chunk.float()).all():
                return name
    return None


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
    ModelFileError saying how many and which; extra ones are ignored (with a warning if asked). A weight that
    is not floating point where the model's is, or that holds NaN/Inf after the cast, is refused (ModelFileError,
    NumericsError) naming the first such tensor. Big weights draw a bar on stderr while they are read
    (:func:`hunyuan_core.progress.loading_bar`)."""
    with torch.device("meta"):
        try:
            model = factory()
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
            raise ModelFileError(f"{what}: its configuration does not describe a model that can be built "
                                 f"({type(exc).__name__}: {exc})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ModelFileError(
            f"{what}: weights incomplete: {len(missing)} of {len(expected)} expected tensors are missing "
            f"(e.g. {', '.join(missing[:3])}); found {len(sd)} tensors such as {', '.join(list(sd)[:3]) or 'none'}"
        )
    wrong_kind = next((k for k, ref in expected.items() if ref.is_floating_point() and not sd[k].is_floating_point()), None)
    if wrong_kind is not None:
        raise ModelFileError(
            f"{what}: weight '{wrong_kind}' is stored as {sd[wrong_kind].dtype}; expected floating-point weights "
            "(float32, float16 or bfloat16): the file is not a weights file of this model or was converted wrongly"
        )
    if warn_unexpected:
        extra = sorted(set(sd) - set(expected))
        if extra:
            warnings.warn(f"{what}: ignoring {len(extra)} tensors that are not part of the model, e.g. {', '.join(extra[:4])}")
    cast: dict[int, torch.Tensor] = {}
    total = sum({id(sd[k]): sd[k].nbytes for k in expected}.values())
    bar, done = loading_bar(total, what), 0
    try:
        for k in expected:
            t = sd[k]
            if id(t) in cast:  # tied weights: cast and checked once
                continue
            # a memory-mapped file is read here, by the cast or else by the check
            cast[id(t)] = weight = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
            if first_non_finite([(k, weight)]) is not None:
                raise NumericsError(
                    f"{what}: weight '{k}' holds NaN or Inf values (as {str(weight.dtype).replace('torch.', '')}); "
                    "the file is corrupt, or its values overflow this precision: download it again or load in float32"
                )
            done += t.nbytes
            bar(done, total)
    finally:
        bar.close()
    weights = {k: cast[id(sd[k])] for k in expected}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[1:4])
        raise ModelFileError(f"{what}: weights do not fit the model's configuration: {detail}") from None
    return model.requires_grad_(False).eval()


def materialise_buffers(model: nn.Module, device: torch.device) -> None:
    """Recreate the non-persistent buffers (not in any weights file) that the meta device left empty."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":  # BERT, CLIP: 0..positions-1
                module._buffers[name] = torch.arange(buf.shape[-1], device=device).expand(buf.shape)
            elif name == "token_type_ids":  # BERT: all segment 0
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype, device=device)
            else:
                raise RuntimeError(f"{type(module).__name__}.{name}: unknown buffer left on the meta device")
