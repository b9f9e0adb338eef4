"""PIL images <-> float tensors ``[1, C, H, W]`` in 0..1, for every mode users hand us (L, LA, RGB, RGBA,
palette, 16-bit); shared by the pipeline (img2img, masks) and the upscaler."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError

MAX_IMAGE_PIXELS = 256 * 1024 * 1024  # 16384 x 16384: larger files are refused before they are decoded

_NATIVE_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_MODES_BY_CHANNELS = {c: m for m, c in _NATIVE_MODES.items()}


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """``[1, C, H, W]`` float32 0..1; palette, CMYK, 16-bit etc. become RGB(A) or L first."""
    if image.mode not in _NATIVE_MODES:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            array = np.asarray(image, dtype=np.float32) / (65535.0 if image.mode != "F" else 1.0)
            return torch.from_numpy(array.clip(0, 1).copy())[None, None]
        image = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Inverse of :func:`pil_to_tensor` for ``[1, C, H, W]`` (rounded to 8 bits)."""
    array = image[0].permute(1, 2, 0).clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy()
    mode = _MODES_BY_CHANNELS[array.shape[2]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def open_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read an image file fully into memory, or raise :class:`InputError` saying why it cannot be used.

    Only regular files are opened (a FIFO or device named ``*.png`` would block forever); the size in the
    header is checked before decoding, so a decompression bomb is refused instead of filling memory.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read image '{path}': {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"'{path}' is not a regular image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise InputError(f"image '{path}' is empty ({w}x{h} px)")
                if w * h > max_pixels:
                    raise InputError(
                        f"image '{path}' is {w}x{h} px ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP"
                    )
                img.load()
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image '{path}' looks like a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image '{path}': {exc}") from None
