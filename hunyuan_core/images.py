"""PIL images <-> float tensors ``[1, C, H, W]`` in 0..1, for every mode users hand us (L, LA, RGB, RGBA,
palette, 16-bit), and inpainting masks in any of their shapes; shared by the pipeline (img2img, masks), the
sampler and the upscaler."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .settings.limits import MAX_IMAGE_PIXELS

_NATIVE_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_MODES_BY_CHANNELS = {c: m for m, c in _NATIVE_MODES.items()}
# Single-channel modes deeper than 8 bits: the full scale of their values, and the array type to write back.
_DEEP_MODES: dict[str, tuple[float, type]] = {
    "I;16": (65535.0, np.uint16), "I;16B": (65535.0, np.uint16), "I;16L": (65535.0, np.uint16),
    "I": (65535.0, np.int32), "F": (1.0, np.float32),
}


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """``[1, C, H, W]`` float32 0..1; palette, CMYK etc. become RGB(A) first, 16/32-bit gray stays one channel."""
    if image.mode in _DEEP_MODES:
        full_scale, _ = _DEEP_MODES[image.mode]
        array = np.asarray(image, dtype=np.float32) / full_scale
        return torch.from_numpy(array.clip(0, 1).copy())[None, None]
    if image.mode not in _NATIVE_MODES:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_pil(image: torch.Tensor, mode: str | None = None) -> Image.Image:
    """Inverse of :func:`pil_to_tensor` for ``[1, C, H, W]``: 8 bits per channel, or for one channel the
    depth of ``mode`` when it is a 16/32-bit gray mode (so a 16-bit input comes back 16-bit)."""
    if mode in _DEEP_MODES and image.shape[1] == 1:
        full_scale, array_type = _DEEP_MODES[mode]
        array = image[0, 0].clamp(0, 1).double().mul(full_scale).cpu().numpy()
        return Image.fromarray((array if array_type is np.float32 else array.round()).astype(array_type))
    array = image[0].permute(1, 2, 0).clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy()
    mode = _MODES_BY_CHANNELS[array.shape[2]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def mask_batch(mask: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """A mask ``[H, W]`` / ``[B, H, W]`` / ``[B, 1, H, W]`` (1 = regenerate, ComfyUI's MASK included) -> float
    ``[B, 1, H, W]`` clamped to 0..1. With ``count``, one mask is shared by ``count`` images and any other batch
    size than 1 or ``count`` is refused."""
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise InputError(f"mask must be [H,W], [B,H,W] or [B,1,H,W]; got shape {tuple(mask.shape)}")
    if count is not None:
        if mask.shape[0] not in (1, count):
            raise InputError(f"mask batch {mask.shape[0]} does not match {count} images")
        mask = mask.expand(count, -1, -1, -1)
    return mask.float().clamp(0, 1)


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
