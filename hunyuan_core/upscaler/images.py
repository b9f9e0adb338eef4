"""Images in and out of the upscaler: PIL images or ``[B, C, H, W]`` float tensors, gray/colour/alpha.

Inside, an image is ``[1, C, H, W]`` float32 in 0..1 with C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA);
colour and alpha are split so that only colour goes through the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..settings.limits import MAX_IMAGE_PIXELS, MAX_UPSCALE_SIDE

# ITU-R 601-2 luma, as PIL's convert("L") uses, to fold a colour result back to gray.
_LUMA = (0.299, 0.587, 0.114)


def output_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """The upscaled size of a ``width`` x ``height`` image; refuses an empty image, and a result beyond
    ``limits.MAX_UPSCALE_SIDE`` per side or ``limits.MAX_IMAGE_PIXELS`` in all, before any work starts."""
    if height < 1 or width < 1:
        raise InputError(f"cannot upscale an empty image ({width}x{height} px)")
    out_h, out_w = max(1, round(height * factor)), max(1, round(width * factor))
    if max(out_h, out_w) > MAX_UPSCALE_SIDE or out_h * out_w > MAX_IMAGE_PIXELS:
        raise InputError(
            f"upscaling {width}x{height} px x{factor:g} would give {out_w}x{out_h} px ({out_w * out_h / 1e6:.0f} MP); "
            f"the limit is {MAX_UPSCALE_SIDE} px per side and {MAX_IMAGE_PIXELS / 1e6:.0f} MP: use a smaller scale"
        )
    return out_h, out_w


def check_batch(images: torch.Tensor) -> None:
    """Refuse anything but a float ``[B, C, H, W]`` tensor with 1-4 channels and non-empty sides."""
    if images.ndim != 4 or not 1 <= images.shape[1] <= 4 or 0 in images.shape:
        raise InputError(
            f"expected an image batch [B, C, H, W] with C = 1..4 and no empty side; got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise InputError(f"expected float pixels in 0..1; got dtype {images.dtype}")


def split_alpha(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[N, C, H, W]`` → (colour with 1 or 3 channels, alpha ``[N, 1, H, W]`` or None)."""
    if image.shape[1] in (2, 4):
        return image[:, :-1], image[:, -1:]
    return image, None


def colour_to_model(colour: torch.Tensor, model_channels: int) -> torch.Tensor:
    """Shape the colour channels for a 1- or 3-channel model: gray is repeated, colour is folded into the batch."""
    if colour.shape[1] == model_channels:
        return colour
    if model_channels == 3:
        return colour.expand(-1, 3, -1, -1)
    return colour.reshape(-1, 1, *colour.shape[2:])


def colour_from_model(result: torch.Tensor, colour_channels: int, model_channels: int) -> torch.Tensor:
    """Undo :func:`colour_to_model` on the upscaled result."""
    if colour_channels == model_channels:
        return result
    if model_channels == 3:
        luma = torch.tensor(_LUMA, device=result.device, dtype=result.dtype).view(1, 3, 1, 1)
        return (result * luma).sum(1, keepdim=True)
    return result.reshape(-1, colour_channels, *result.shape[2:])


def resize(image: torch.Tensor, height: int, width: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize ``[N, C, H, W]``; antialiased when shrinking, clamped to 0..1."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    shrink = height < image.shape[-2] or width < image.shape[-1]
    return F.interpolate(image, size=(height, width), mode=mode, align_corners=False, antialias=shrink).clamp_(0, 1)
