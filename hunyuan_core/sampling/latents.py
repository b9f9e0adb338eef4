"""Where sampling starts and what it keeps: per-image noise, the img2img start, inpainting's kept region.

Latents are *scaled* (DiT space: VAE latents x 0.13025), ``[n, 4, height/8, width/8]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..images import mask_batch
from ..settings.validate import check_finite
from .schedulers import Schedulers

LATENT_CHANNELS = 4


def check_latents(name: str, latents: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """``latents`` as float32 ``[n, 4, h, w]`` and finite, else :class:`InputError`."""
    if tuple(latents.shape) != (n, LATENT_CHANNELS, h, w):
        raise InputError(f"{name} must have shape {(n, LATENT_CHANNELS, h, w)} for {8 * w}x{8 * h} images; "
                         f"got {tuple(latents.shape)}")
    check_finite(name, latents)
    return latents.float()


def initial_noise(generators: list[torch.Generator], h: int, w: int) -> torch.Tensor:
    """One ``[1, 4, h, w]`` draw per image from its own CPU generator, so a batch repeats single runs anywhere."""
    return torch.cat([torch.randn(1, LATENT_CHANNELS, h, w, generator=g) for g in generators])


def first_step(steps: int, strength: float) -> int:
    """The inference step img2img starts at: ``strength`` 1 runs every step, smaller values skip the first ones
    (at least one step always runs)."""
    return steps - max(1, min(steps, int(round(steps * strength))))


class Inpainting:
    """Keeps the region outside ``mask`` (1 = regenerate): after each step the latents there are the source
    noised to the next step's level, and the source itself after the last step."""

    def __init__(self, mask: torch.Tensor, source: torch.Tensor, noise: torch.Tensor, schedulers: Schedulers):
        n, _, h, w = source.shape
        mask = mask_batch(mask.to(source.device), n)
        self.mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
        self.source, self.noise, self.schedulers = source, noise, schedulers

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """``x`` after inference step ``step`` (counted from 1) with the kept region put back."""
        timesteps = self.schedulers.timesteps
        keep = self.source
        if step < len(timesteps):
            keep = self.schedulers.add_noise(self.source, self.noise, timesteps[step])
        return self.mask * x + (1.0 - self.mask) * keep
