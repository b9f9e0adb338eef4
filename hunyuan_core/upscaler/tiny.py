"""Tiny random SR models in the real file layouts, for tests and for checking an install without downloads."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..outputs import atomic_path
from .rrdbnet import RRDBConfig, RRDBNet
from .srvgg import SRVGGConfig, SRVGGNetCompact


def make_tiny_upscaler(
    dest: str | os.PathLike, architecture: str = "RRDBNet", scale: int = 4, seed: int = 0
) -> Path:
    """Write a small random model as Real-ESRGAN ships it: ``{"params_ema": weights}`` in a ``.pth``,
    or bare weights when ``dest`` ends in ``.safetensors``.

    ``architecture``: ``"RRDBNet"`` (scale 4, 2 or 1; 2 and 1 pixel-unshuffle) or ``"SRVGGNetCompact"`` (any scale).
    Weights are random (std 0.02): the output is meaningless but has the right size and type.
    """
    if architecture == "RRDBNet":
        if scale not in (1, 2, 4):
            raise ValueError(f"tiny RRDBNet: scale must be 4, 2 or 1; got {scale}")
        unshuffle = 4 // scale
        # 32 growth channels as in every release: spandrel (ComfyUI's loader) cannot read other values.
        config = RRDBConfig(3 * unshuffle**2, 3, num_feat=8, num_blocks=1, num_grow=32, unshuffle=unshuffle)
        model: torch.nn.Module = RRDBNet(config)
    elif architecture == "SRVGGNetCompact":
        model = SRVGGNetCompact(SRVGGConfig(3, num_feat=8, num_conv=2, scale=scale))
    else:
        raise ValueError(f"unknown tiny architecture {architecture!r}; expected 'RRDBNet' or 'SRVGGNetCompact'")
    generator = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in model.state_dict().items()}
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        if dest.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(weights, str(tmp))
        else:
            torch.save({"params_ema": weights}, tmp)
    return dest
