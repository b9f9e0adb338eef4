"""Which super-resolution network a weights file holds, read from its key names and shapes alone.

The built-in architectures (RRDBNet in its three key styles, SRVGGNetCompact) are recognised here and
built with their weights materialised once, in the target device and dtype. Anything else is left to
spandrel by the caller (see :mod:`.upscaler`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.materialise import build_with_weights
from .rrdbnet import RRDBConfig, RRDBNet, is_rrdbnet, to_canonical_keys
from .srvgg import SRVGGConfig, SRVGGNetCompact, is_srvgg

StateDict = dict[str, torch.Tensor]

# Where training tools put the weights inside a checkpoint; Real-ESRGAN: "prefer params_ema".
CONTAINER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "net_g", "netG", "model")
_PREFIXES = ("module.", "netG.", "generator.")


@dataclass(frozen=True)
class Detected:
    """A recognised built-in architecture: its name, hyper-parameters and weights in canonical names."""

    architecture: str
    config: RRDBConfig | SRVGGConfig
    state_dict: StateDict

    @property
    def scale(self) -> int:
        """Native upscaling factor."""
        return self.config.scale

    @property
    def channels(self) -> int:
        """Image channels in and out (3 for colour models, 1 for grayscale ones)."""
        return self.config.image_channels

    @property
    def align(self) -> int:
        """Tile origins must be multiples of this so tiles see the same pixel grid as the whole image."""
        return getattr(self.config, "unshuffle", 1)


def strip_prefix(sd: StateDict) -> StateDict:
    """Drop a wrapper prefix (``module.`` from DataParallel, ``netG.``/``generator.`` from GAN trainers)."""
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def detect(sd: StateDict, where: str = "upscale model") -> Detected | None:
    """Recognise RRDBNet (ESRGAN, Real-ESRGAN, BSRGAN key styles) or SRVGGNetCompact; None for anything else."""
    sd = strip_prefix(sd)
    if is_rrdbnet(sd):
        canonical = to_canonical_keys(sd)
        return Detected("RRDBNet", RRDBConfig.from_state_dict(canonical, where), canonical)
    if is_srvgg(sd):
        return Detected("SRVGGNetCompact", SRVGGConfig.from_state_dict(sd, where), sd)
    return None


def build(detected: Detected, device: torch.device, dtype: torch.dtype, where: str = "upscale model") -> nn.Module:
    """The network with its weights assigned once in ``device``/``dtype`` (see :func:`build_with_weights`)."""
    cls = RRDBNet if detected.architecture == "RRDBNet" else SRVGGNetCompact
    what = f"{where} (looks like a {detected.architecture}, {detected.config})"
    return build_with_weights(lambda: cls(detected.config), detected.state_dict, device, dtype, what)
