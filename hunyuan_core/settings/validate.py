"""Checks of the scalar settings every public entry point takes (pipeline, ``sample``, ``load_pipeline``, CLI).

Each check raises :class:`InputError` saying which setting, what was expected and what was found, before
any model loads or any step runs; the limits come from ``limits.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import torch

from ..errors import InputError
from ..model.config import DiTConfig
from ..model.versions import VERSION_DEFAULTS
from ..sampling.schedulers import scheduler_settings
from .devices import free_memory, resolve_device
from .limits import BLOCK_WORKING_SET, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, MAX_TOKEN_ROWS
from .sizes import check_size

LATENT_DOWNSAMPLE = 8  # SDXL VAE


def _found(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``; bools, floats and strings are refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{name} must be an integer, found {_found(value)}")
    if value < lo or (hi is not None and value > hi):
        expected = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise InputError(f"{name} must be {expected}, found {value}")
    return int(value)


def check_float(
    name: str, value: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    """``value`` as a finite float in the interval ``lo..hi`` (each end closed unless marked open)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} must be a number, found {_found(value)}")
    value = float(value)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise InputError(f"{name} must be a finite number in {interval}, found {value}")
    return value


def check_seeds(seed: object, count: int = 1) -> list[int]:
    """The seed of each of ``count`` images: an int means ``seed + i`` for image i; a list or tuple gives one seed
    per image. Every seed lies within the generator's 0..2**64 - 1."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != count:
            raise InputError(f"{len(seed)} seeds (or generators) for {count} images: give one, or one per image")
        return [check_int("seed", s, 0, MAX_SEED) for s in seed]
    seed = check_int("seed", seed, 0, MAX_SEED)
    if seed + count - 1 > MAX_SEED:
        raise InputError(
            f"seed {seed} with {count} images would use seeds up to {seed + count - 1}; the largest seed is {MAX_SEED}"
        )
    return [seed + i for i in range(count)]


def check_steps(steps: object, sampler: str, schedule: str = "default") -> int:
    """Steps within what ``sampler`` can spread over the 1000 training timesteps (``limits.MAX_STEPS``), on a
    ``schedule`` its diffusers class supports."""
    scheduler_settings(sampler, schedule)
    return check_int(f"steps for sampler '{sampler}'", steps, 1, MAX_STEPS[sampler])


def check_beta_end(beta_end: object, beta_start: float | None = None) -> float | None:
    """``None`` (the release's default) or a schedule end in (0, 1) above ``beta_start`` (default: every
    release's, so it can be checked before the model is known)."""
    if beta_end is None:
        return None
    beta_end = check_float("beta_end", beta_end, 0.0, 1.0, lo_open=True, hi_open=True)
    if beta_start is None:
        beta_start = max(v.beta_start for v in VERSION_DEFAULTS.values())
    if beta_end <= beta_start:
        raise InputError(f"beta_end must be larger than the schedule's beta_start {beta_start}, found {beta_end}")
    return beta_end


def check_finite(name: str, tensor: torch.Tensor | None) -> None:
    """Refuse a tensor holding NaN or Inf (it would turn the whole image black)."""
    if tensor is not None and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(f"{name} must be finite; found {bad} NaN/Inf values of {tensor.numel()}")


def check_texts(name: str, value: object) -> list[str]:
    """A string or a non-empty list of strings, as a list."""
    texts = [value] if isinstance(value, str) else value
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        return list(texts)
    raise InputError(f"{name} must be a string or a non-empty list of strings, found {_found(value)}")


def check_prompts(prompt: object, negative: object = None) -> list[str]:
    """The prompts as a list (none empty); a list of negatives has one entry or one per prompt."""
    prompts = check_texts("prompt", prompt)
    if any(not p.strip() for p in prompts):
        raise InputError("the prompt is empty: describe the image to draw (Chinese or English)")
    if negative is not None:
        negatives = check_texts("negative_prompt", negative)
        if len(negatives) not in (1, len(prompts)):
            raise InputError(
                f"negative_prompt has {len(negatives)} entries for {len(prompts)} prompts: give one, or one per prompt"
            )
    return prompts


def token_rows(width: int, height: int, rows: int, patch_size: int = 2) -> int:
    """Latent tokens one DiT forward processes for ``rows`` images of ``width`` x ``height``; refused above
    ``limits.MAX_TOKEN_ROWS``."""
    tokens = (height // LATENT_DOWNSAMPLE // patch_size) * (width // LATENT_DOWNSAMPLE // patch_size)
    if tokens * rows > MAX_TOKEN_ROWS:
        raise InputError(
            f"{width}x{height} px x {rows} images per step (batch x prompts, x2 with guidance) is "
            f"{tokens * rows:,} latent tokens per step; the limit is {MAX_TOKEN_ROWS:,}: lower the size or the batch"
        )
    return tokens * rows


def check_sampling(
    *,
    width: object,
    height: object,
    steps: object,
    guidance_scale: object,
    guidance_rescale: object = 0.0,
    sampler: str = "ddpm",
    schedule: str = "default",
    seed: object = 0,
    batch_size: object = 1,
    prompts: int = 1,
    strength: object = 1.0,
    beta_end: object = None,
) -> None:
    """Every scalar of one sampling run, and the work it asks for (see ``limits.py``)."""
    width, height = check_size(width, height)
    check_steps(steps, sampler, schedule)
    guidance_scale = check_float("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
    check_float("guidance_rescale", guidance_rescale, 0.0, 1.0)
    batch_size = check_int("batch_size", batch_size, 1)
    token_rows(width, height, prompts * batch_size * (2 if guidance_scale > 1.0 else 1))  # before the seeds it needs
    check_seeds(seed, prompts * batch_size)
    check_float("strength (denoise)", strength, 0.0, 1.0, lo_open=True)
    check_beta_end(beta_end)


def check_generate(*, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
                   device: str | torch.device | None = None, **settings: object) -> None:
    """All arguments of a generate request, before any model loads: prompts, device, :func:`check_sampling`."""
    prompts = check_prompts(prompt, negative_prompt)
    resolve_device(device)
    check_sampling(prompts=len(prompts), **settings)


def dit_activation_bytes(config: DiTConfig, dtype: torch.dtype, width: int, height: int, rows: int,
                         controlnets: int = 0) -> int:
    """The DiT's activation memory for one step [estimate]: the long skips of the first half of the blocks plus
    one block's working set (``limits.BLOCK_WORKING_SET``) for every token row. With ``controlnets``, their
    residuals (one per copied block, ``config.skip_count``) are held too: the running sum, and the next
    ControlNet's own while it computes."""
    tokens = token_rows(width, height, rows, config.patch_size)
    per_block = tokens * config.hidden_size * (torch.finfo(dtype).bits // 8)
    return per_block * (config.depth // 2 + BLOCK_WORKING_SET + min(controlnets, 2) * config.skip_count)


def check_memory(config: DiTConfig, dtype: torch.dtype, device: torch.device, width: int, height: int, rows: int,
                 controlnets: int = 0) -> None:
    """Refuse a run whose DiT activations (and ``controlnets``' residuals) cannot fit in the memory ``device``
    has free.

    The estimate is :func:`dit_activation_bytes`; attention goes through SDPA, whose fused kernels need memory
    linear in the tokens (included in the working set), not the tokens x tokens score matrix.
    """
    need = dit_activation_bytes(config, dtype, width, height, rows, controlnets)
    free = free_memory(device)
    if free is not None and need > free:
        raise InputError(
            f"{width}x{height} px x {rows} images per step needs about {need / 2**30:.1f} GiB of activations on "
            f"{device}; {free / 2**30:.1f} GiB are free: lower the size or the batch"
        )
