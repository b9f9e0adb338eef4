"""The sampler loop: a denoiser, per-image schedulers and nothing else (k-diffusion's ``sample_*`` shape)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import NumericsError
from .denoiser import Denoiser
from .latents import Inpainting
from .schedulers import Schedulers

Progress = Callable[[int, int, torch.Tensor], None]
StepEnd = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def non_finite_report(step: int, total: int, dtype: torch.dtype, device: torch.device) -> str:
    """Why sampling produced NaN/Inf, from what it ran in: inputs were checked finite before the first step,
    so it is fp16 overflow (the black-image failure on GPUs) or non-finite weights."""
    found = f"sampling produced NaN/Inf latents at step {step} of {total} (the image would be black)"
    if dtype == torch.float16:
        return (f"{found}: the DiT runs in fp16 on {device}, whose range some layers overflow; "
                "load the model with dtype bf16 (or fp32)")
    return (f"{found}, with {str(dtype).replace('torch.', '')} weights on {device}, which do not overflow: the "
            "model's weights likely hold NaN/Inf (re-download or re-convert the file)")


def denoise(denoiser: Denoiser, schedulers: Schedulers, x: torch.Tensor, *, inpainting: Inpainting | None = None,
            progress: Progress | None = None, cancel: Callable[[], None] | None = None,
            step_end: StepEnd | None = None) -> torch.Tensor:
    """Step ``x`` through every timestep of ``schedulers``. ``cancel()`` runs before each step (it raises to
    stop); after it ``step_end(index, t, x)`` may return new latents, then ``progress(step, total, x)`` reports;
    NaN/Inf stops the run at once with a :class:`NumericsError`."""
    total = len(schedulers.timesteps)
    for i, t in enumerate(schedulers.timesteps):
        if cancel is not None:
            cancel()
        pred = denoiser(schedulers.scale_model_input(x, t), t, i / total)
        x = schedulers.step(pred, t, x)
        if inpainting is not None:
            x = inpainting(x, i + 1)
        if step_end is not None:
            x = step_end(i, t, x)
        if not torch.isfinite(x).all():  # every further step would be wasted on a black image
            raise NumericsError(non_finite_report(i + 1, total, denoiser.dit.dtype, denoiser.dit.device))
        if progress is not None:
            progress(i + 1, total, x)
    return x
