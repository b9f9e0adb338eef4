"""SRVGGNetCompact: Real-ESRGAN's compact model (realesr-general-x4v3, realesr-animevideov3).

A plain stack of 3×3 convs with per-channel PReLU at low resolution; the last conv emits
``channels * scale²`` maps that a pixel shuffle turns into the residual, added to the
nearest-neighbour-upsampled input. Weights are ``body.{2i}`` (convs) and ``body.{2i+1}`` (PReLU slopes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SRVGGConfig:
    """Hyper-parameters of an SRVGGNetCompact, read from its weights by :meth:`from_state_dict`."""

    in_channels: int = 3
    num_feat: int = 64
    num_conv: int = 16
    scale: int = 4

    @property
    def image_channels(self) -> int:
        """Channels of the image the model takes (and returns)."""
        return self.in_channels

    @classmethod
    def from_state_dict(cls, sd: StateDict, where: str = "SRVGGNetCompact weights") -> SRVGGConfig:
        """Infer the configuration; the output has as many channels as the input."""
        indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.weight$", k))})
        last = indices[-1] if indices else -1
        if last < 2 or last % 2 or indices != list(range(last + 1)):
            raise ModelFileError(
                f"{where}: expected convs body.0, body.2, ... with PReLU slopes body.1, body.3, ...; "
                f"found body indices {indices}"
            )
        in_ch, num_feat = sd["body.0.weight"].shape[1], sd["body.0.weight"].shape[0]
        scale = math.isqrt(sd[f"body.{last}.weight"].shape[0] // in_ch)
        if scale < 1 or sd[f"body.{last}.weight"].shape[0] != in_ch * scale * scale:
            raise ModelFileError(
                f"{where}: last conv body.{last} has {sd[f'body.{last}.weight'].shape[0]} outputs, "
                f"not {in_ch} channels × a square scale"
            )
        return cls(in_ch, num_feat, (last - 2) // 2, scale)


def is_srvgg(sd: StateDict) -> bool:
    """True for SRVGGNetCompact weights with PReLU activations (the released Real-ESRGAN compact models)."""
    w0, a1 = sd.get("body.0.weight"), sd.get("body.1.weight")
    return w0 is not None and a1 is not None and w0.ndim == 4 and a1.ndim == 1 and "conv_first.weight" not in sd


class SRVGGNetCompact(nn.Module):
    """Takes ``[N, C, H, W]``, returns ``[N, C, H*scale, W*scale]``."""

    def __init__(self, config: SRVGGConfig):
        super().__init__()
        c = config
        self.config = c
        layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.num_feat, 3, 1, 1), nn.PReLU(c.num_feat)]
        for _ in range(c.num_conv):
            layers += [nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1), nn.PReLU(c.num_feat)]
        layers.append(nn.Conv2d(c.num_feat, c.in_channels * c.scale * c.scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.config.scale)
        return out.add_(F.interpolate(x, scale_factor=self.config.scale, mode="nearest"))
