"""RRDBNet (ESRGAN / Real-ESRGAN / BSRGAN) and the three key styles its weights are shared in.

The network is written from the ESRGAN paper's structure as Real-ESRGAN lays it out: a first conv,
a trunk of residual-in-residual dense blocks (each three 5-conv dense blocks, residuals scaled by 0.2)
closed by a conv and a long skip, then ×2 nearest-neighbour upsampling stages each followed by a conv
and LeakyReLU(0.2), and two final convs. Real-ESRGAN's x2 and x1 models pixel-unshuffle the input by
2 or 4 first (12 or 48 input channels), so the same ×4 body yields ×2 or ×1.

Canonical names are Real-ESRGAN's (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
``conv_upN``, ``conv_hr``, ``conv_last``); :func:`to_canonical_keys` maps the original ESRGAN
sequential names (``model.0``, ``model.1.sub.N.RDBK.convJ.0``, ...) and the BSRGAN/ESRGAN-repo names
(``RRDB_trunk``, ``trunk_conv``, ``upconvN``, ``HRconv``) onto them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError

StateDict = dict[str, torch.Tensor]

_NEG_SLOPE = 0.2
_RESIDUAL_SCALE = 0.2


@dataclass(frozen=True)
class RRDBConfig:
    """Hyper-parameters of an RRDBNet, all read from its weights by :meth:`from_state_dict`."""

    in_channels: int = 3
    out_channels: int = 3
    num_feat: int = 64
    num_blocks: int = 23
    num_grow: int = 32
    num_upsample: int = 2  # ×2 nearest+conv stages after the trunk
    unshuffle: int = 1  # pixel-unshuffle factor of the input (Real-ESRGAN x2: 2, x1: 4)

    @property
    def scale(self) -> int:
        """Output size / input size."""
        return 2**self.num_upsample // self.unshuffle

    @property
    def image_channels(self) -> int:
        """Channels of the image the model takes (before pixel-unshuffle)."""
        return self.in_channels // self.unshuffle**2

    @classmethod
    def from_state_dict(cls, sd: StateDict, where: str = "RRDBNet weights") -> RRDBConfig:
        """Infer the configuration from canonical (Real-ESRGAN-named) weights."""
        required = ("conv_first.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight")
        missing = [k for k in required if k not in sd]
        if missing:
            raise ModelFileError(f"{where}: not a complete RRDBNet; missing {', '.join(missing)}")
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.rdb1\.conv1\.weight$", k))}
        ups = {int(m.group(1)) for k in sd if (m := re.match(r"conv_up(\d+)\.weight$", k))}
        if blocks != set(range(len(blocks))) or ups != set(range(1, len(ups) + 1)):
            raise ModelFileError(
                f"{where}: trunk blocks {sorted(blocks)} / upsampling convs {sorted(ups)} are not numbered "
                "consecutively; the file is damaged or not an RRDBNet"
            )
        in_ch = sd["conv_first.weight"].shape[1]
        out_ch = sd["conv_last.weight"].shape[0]
        unshuffle = 1
        for factor in (2, 4):
            if in_ch == out_ch * factor * factor:
                unshuffle = factor
        num_grow = sd["body.0.rdb1.conv1.weight"].shape[0] if blocks else 32
        return cls(in_ch, out_ch, sd["conv_first.weight"].shape[0], len(blocks), num_grow, len(ups), unshuffle)


# -------------------------------------------------------------------------------------- key styles
def _old_sequential_to_canonical(sd: StateDict) -> StateDict:
    """Original ESRGAN ``model.N`` names: 0 first conv, 1 trunk (``sub.N`` blocks + closing conv),
    then per ×2 stage an upsample + conv + activation (3 slots), then HR conv, activation, last conv."""
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.(weight|bias)$", k))})
    trunk = sorted({int(m.group(1)) for k in sd if (m := re.match(r"model\.1\.sub\.(\d+)\.(weight|bias)$", k))})
    if not indices or indices[0] != 0 or len(trunk) != 1:
        raise ModelFileError("old-style ESRGAN weights: expected model.0 and one trunk conv model.1.sub.N; not found")
    last, hr = indices[-1], indices[-1] - 2
    names = {0: "conv_first", last: "conv_last", hr: "conv_hr"}
    for i in indices:
        if i not in names:
            names[i] = f"conv_up{i // 3}"
    out: StateDict = {}
    for key, value in sd.items():
        if m := re.match(r"model\.(\d+)\.(weight|bias)$", key):
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        elif m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif m := re.match(r"model\.1\.sub\.(\d+)\.(weight|bias)$", key):
            out[f"conv_body.{m.group(2)}"] = value
        else:
            out[key] = value  # left for the strict load to report
    return out


_BSRGAN_RENAMES = ((r"^RRDB_trunk\.", "body."), (r"\.RDB(\d)\.", r".rdb\1."), (r"^trunk_conv\.", "conv_body."),
                   (r"^upconv(\d+)\.", r"conv_up\1."), (r"^HRconv\.", "conv_hr."))


def to_canonical_keys(sd: StateDict) -> StateDict:
    """Rename any of the three RRDBNet key styles to Real-ESRGAN's names (other keys pass through)."""
    if "model.0.weight" in sd:
        return _old_sequential_to_canonical(sd)
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        out = {}
        for key, value in sd.items():
            for pattern, repl in _BSRGAN_RENAMES:
                key = re.sub(pattern, repl, key)
            out[key] = value
        return out
    return dict(sd)


def is_rrdbnet(sd: StateDict) -> bool:
    """True for plain RRDBNet weights in any key style (ESRGAN+ with its extra 1×1 convs is not)."""
    if any(".conv1x1." in k for k in sd):
        return False
    return (
        ("model.0.weight" in sd and "model.1.sub.0.RDB1.conv1.0.weight" in sd)
        or ("conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd and "conv_body.weight" in sd)
        or ("conv_first.weight" in sd and "RRDB_trunk.0.RDB1.conv1.weight" in sd and "trunk_conv.weight" in sd)
    )


# ---------------------------------------------------------------------------------------- network
def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class DenseBlock(nn.Module):
    """Five 3×3 convs, each seeing the block input and every earlier output; scaled residual."""

    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        for j in range(1, 5):
            self.add_module(f"conv{j}", _conv(num_feat + (j - 1) * num_grow, num_grow))
        self.conv5 = _conv(num_feat + 4 * num_grow, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for j in range(1, 5):
            conv = getattr(self, f"conv{j}")
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), _NEG_SLOPE, inplace=True))
        return self.conv5(torch.cat(features, 1)) * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three dense blocks in sequence inside one more scaled residual."""

    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        self.rdb1 = DenseBlock(num_feat, num_grow)
        self.rdb2 = DenseBlock(num_feat, num_grow)
        self.rdb3 = DenseBlock(num_feat, num_grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the right/bottom edges of ``[N,C,H,W]`` to a multiple: mirrored, or repeated where too thin to mirror."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class RRDBNet(nn.Module):
    """ESRGAN's generator; takes ``[N, C, H, W]`` of any size, returns ``[N, C, H*scale, W*scale]``."""

    def __init__(self, config: RRDBConfig):
        super().__init__()
        c = config
        self.config = c
        self.conv_first = _conv(c.in_channels, c.num_feat)
        self.body = nn.Sequential(*(RRDB(c.num_feat, c.num_grow) for _ in range(c.num_blocks)))
        self.conv_body = _conv(c.num_feat, c.num_feat)
        for i in range(1, c.num_upsample + 1):
            self.add_module(f"conv_up{i}", _conv(c.num_feat, c.num_feat))
        self.conv_hr = _conv(c.num_feat, c.num_feat)
        self.conv_last = _conv(c.num_feat, c.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        h, w = x.shape[-2:]
        if c.unshuffle > 1:
            x = F.pixel_unshuffle(pad_to_multiple(x, c.unshuffle), c.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        # Rebinding `feat` and in-place activations: at most two full-resolution feature maps live.
        for i in range(1, c.num_upsample + 1):
            feat = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{i}")(feat), _NEG_SLOPE, inplace=True)
        feat = F.leaky_relu(self.conv_hr(feat), _NEG_SLOPE, inplace=True)
        out = self.conv_last(feat)
        return out[..., : h * c.scale, : w * c.scale]
