"""An image prompt for :func:`~hunyuan_core.sample`: the IP-Adapter's reference embedding, its scale and the
part of the run it acts in."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..settings.limits import MAX_IP_SCALE
from ..settings.validate import check_finite, check_float


def check_ip_scale(scale: object) -> float:
    """The IP-Adapter's image scale as a float in 0..MAX_IP_SCALE, else :class:`InputError`."""
    return check_float("ip scale", scale, 0.0, MAX_IP_SCALE)


@dataclass
class ImagePrompt:
    """``embeds`` ``[1 or n, clip_dim]`` from ``ipa.encode_image`` (one for every image, or one per image), the
    adapter's ``scale`` (the official ``i_scale``) and the fraction of the sampling steps it acts in (a step
    starting ``fraction`` into the run is active when ``start <= fraction < end``, as for ControlNets). The
    unconditional half of guidance gets a zero embedding, as the official sampler gives it. The DiT needs an
    IP-Adapter attached (``ipa.attach(dit)``)."""

    embeds: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def check(self) -> "ImagePrompt":
        """Refuse a scale or window out of range and embeddings that are not ``[rows, D]`` finite values."""
        check_ip_scale(self.scale)
        check_float("ip start", self.start, 0.0, 1.0)
        check_float("ip end", self.end, self.start, 1.0)
        e = self.embeds
        if not isinstance(e, torch.Tensor) or e.ndim != 2 or 0 in e.shape:
            found = list(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise InputError(f"image prompt embeds must be a [rows, D] tensor (from ipa.encode_image); got {found}")
        check_finite("image prompt embeds", e)
        return self

    def rows(self, n: int, guided: bool) -> torch.Tensor:
        """The embeddings for ``n`` images (zeros first when guided: the batch is [uncond; cond]), checked."""
        e = self.check().embeds
        if len(e) not in (1, n):
            raise InputError(f"image prompt embeds must have shape [1, D] or [{n}, D] (one per image); got "
                             f"{list(e.shape)}")
        e = e.expand(n, -1)
        return torch.cat([torch.zeros_like(e), e]) if guided else e

    def active_at(self, fraction: float) -> bool:
        """Whether the adapter acts at a step starting ``fraction`` (0 = the first step) into the run."""
        return self.start <= fraction < self.end
