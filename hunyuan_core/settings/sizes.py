"""Image sizes: the 10 official resolutions, and the rule every size must follow (multiple of 16 px)."""

from __future__ import annotations

from ..errors import InputError
from .limits import MAX_SIZE, MIN_SIZE

# (width, height): the official ResolutionGroup (hydit/inference.py), squares first.
PRESETS: list[tuple[int, int]] = [
    (1024, 1024), (1280, 1280),
    (1024, 768), (1152, 864), (1280, 960),
    (768, 1024), (864, 1152), (960, 1280),
    (1280, 768), (768, 1280),
]
MULTIPLE = 16  # VAE downsampling 8 x patch size 2


def preset_label(width: int, height: int) -> str:
    """Human label of a preset, e.g. ``"1280x768 (16:9)"``."""
    ratios = {1.0: "1:1", 4 / 3: "4:3", 3 / 4: "3:4", 16 / 9: "16:9", 9 / 16: "9:16"}
    ratio = min(ratios, key=lambda r: abs(r - width / height))
    return f"{width}x{height} ({ratios[ratio]})"


def check_size(width: int, height: int) -> tuple[int, int]:
    """Return (width, height) if both are multiples of 16 in range; else raise an error naming the nearest valid size."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"{name} must be an integer number of pixels, got {v!r}")
        if not MIN_SIZE <= v <= MAX_SIZE:
            raise InputError(f"{name} must be between {MIN_SIZE} and {MAX_SIZE} px, got {v}")
    if width % MULTIPLE or height % MULTIPLE:
        snap = lambda v: max(MIN_SIZE, round(v / MULTIPLE) * MULTIPLE)  # noqa: E731
        raise InputError(
            f"size {width}x{height} is not a multiple of {MULTIPLE} px (VAE 8x downsampling x DiT patch 2); "
            f"nearest valid size: {snap(width)}x{snap(height)}"
        )
    return width, height
