"""What a user asks a ControlNet for (:class:`Control`) and the once-per-run preparation of its hint
(:func:`prepare_controls`): resized the official way (``Resize`` / ``Crop_and_Resize`` / ``Resize_and_Fill`` of
the official app, PIL bicubic), VAE-encoded once, scaled latents ready for every step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ..errors import InputError
from ..images import pil_to_tensor, tensor_to_pil
from ..model.vae import encode_images
from .model import ControlNet

RESIZE_MODES = ("crop_and_resize", "resize", "resize_and_fill")


@dataclass
class Control:
    """One ControlNet applied to one hint image.

    ``image``: a PIL image or a ``[B, C, H, W]`` tensor in 0..1 (one hint, or one per generated image);
    ``strength``: a float for every control, or one per copied block (``len(controlnet.blocks)`` floats, see
    :func:`decaying_strengths`); ``start``/``end``: the fraction of the sampling steps it is active in;
    ``resize_mode``: how the hint meets the output size (:data:`RESIZE_MODES`).
    """

    controlnet: ControlNet
    image: Image.Image | torch.Tensor
    strength: float | Sequence[float] = 1.0
    start: float = 0.0
    end: float = 1.0
    resize_mode: str = "crop_and_resize"


@dataclass
class PreparedControl:
    """A :class:`Control` ready for sampling: the hint's scaled latents ``condition`` ``[1 or n, 4, h, w]`` and
    one strength per control (``scales`` ``[blocks]``, float32)."""

    controlnet: ControlNet
    condition: torch.Tensor
    scales: torch.Tensor
    start: float = 0.0
    end: float = 1.0

    @property
    def active(self) -> bool:
        """Whether it changes anything at all (a strength of 0 everywhere, or an empty range, does not)."""
        return self.start < self.end and bool(self.scales.any())

    def active_at(self, fraction: float) -> bool:
        """Whether it runs at a step starting ``fraction`` (0 = first step) into the run."""
        return self.active and self.start <= fraction < self.end


def decaying_strengths(count: int, ratio: float = 0.825, strength: float = 1.0) -> list[float]:
    """Per-control strengths ``strength * ratio ** (count - i)`` for control i (the official README's
    ``[1.0 * (0.825 ** float(19 - i)) for i in range(19)]``): deep controls kept, early ones faded."""
    return [strength * ratio ** float(count - i) for i in range(count)]


def _scales(control: Control) -> torch.Tensor:
    count = len(control.controlnet.blocks)
    strength = control.strength
    values = [strength] * count if isinstance(strength, (int, float)) and not isinstance(strength, bool) else strength
    if not isinstance(values, (list, tuple)) or len(values) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise InputError(f"ControlNet strength must be a finite number or a list of {count} (one per control); "
                         f"got {strength!r:.120}")
    return torch.tensor(values, dtype=torch.float32)


def check_control(control: object) -> None:
    """Refuse (InputError) a control that is not a :class:`Control` with usable fields, before any work."""
    if not isinstance(control, Control):
        raise InputError(f"controlnets takes hunyuan_core.Control items; found {type(control).__name__}")
    if not isinstance(control.controlnet, ControlNet):
        raise InputError(f"Control.controlnet must be a loaded ControlNet (hy.load_controlnet); "
                         f"found {type(control.controlnet).__name__}")
    if not isinstance(control.image, (Image.Image, torch.Tensor)):
        raise InputError(f"Control.image must be a PIL image or a [B,C,H,W] tensor in 0..1; "
                         f"found {type(control.image).__name__}")
    if control.resize_mode not in RESIZE_MODES:
        raise InputError(f"unknown resize_mode {control.resize_mode!r}: choose one of {', '.join(RESIZE_MODES)}")
    if not (isinstance(control.start, (int, float)) and isinstance(control.end, (int, float))
            and 0.0 <= control.start <= control.end <= 1.0):
        raise InputError(f"ControlNet start and end must satisfy 0 <= start <= end <= 1; "
                         f"got start={control.start!r}, end={control.end!r}")
    _scales(control)


def resize_hint(image: Image.Image, width: int, height: int, mode: str = "crop_and_resize") -> Image.Image:
    """The hint at ``width`` x ``height`` as the official app makes it: ``resize`` stretches;
    ``crop_and_resize`` scales to cover and crops the centre; ``resize_and_fill`` scales to fit and centres it
    on black."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    if mode == "resize":
        return image.resize((width, height), Image.BICUBIC)
    w, h = image.size
    cover = mode == "crop_and_resize"
    scale = (max if cover else min)(width / w, height / h)
    new_w, new_h = (width, int(h * scale)) if scale == width / w else (int(w * scale), height)
    resized = image.resize((max(new_w, 1), max(new_h, 1)), Image.BICUBIC)
    if cover:
        left, top = (new_w - width) / 2, (new_h - height) / 2
        return resized.crop((left, top, left + width, top + height))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def hint_pixels(image: Image.Image | torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """A hint (PIL image or ``[B, C, H, W]`` / ``[C, H, W]`` tensor in 0..1, 1 or 3 channels) as
    ``[B, 3, height, width]`` float32 in 0..1; tensors already of that size pass unchanged."""
    if isinstance(image, Image.Image):
        return pil_to_tensor(resize_hint(image, width, height, mode))
    t = image[None] if image.ndim == 3 else image
    if t.ndim != 4 or t.shape[1] not in (1, 3) or 0 in t.shape:
        raise InputError(f"a ControlNet hint tensor must be [B, 3 or 1, H, W] in 0..1; got shape {tuple(image.shape)}")
    if not torch.isfinite(t).all():
        raise InputError("the ControlNet hint holds NaN/Inf values")
    t = t.float().clamp(0, 1).expand(-1, 3, -1, -1)
    if t.shape[-2:] == (height, width):
        return t
    return torch.cat([pil_to_tensor(resize_hint(tensor_to_pil(row[None]), width, height, mode)) for row in t])


def prepare_controls(controls: Sequence[Control], vae, width: int, height: int) -> list[PreparedControl]:
    """Resize each hint to ``width`` x ``height`` and encode it with ``vae`` once (the posterior's mode, so the
    result is deterministic, as ComfyUI encodes hints), for :func:`hunyuan_core.sample` (``controls=``)."""
    for control in controls:
        check_control(control)
    prepared = []
    param = next(vae.parameters())
    for control in controls:
        pixels = hint_pixels(control.image, width, height, control.resize_mode).to(param.device, param.dtype)
        condition = encode_images(vae, pixels, mode=True)
        prepared.append(PreparedControl(control.controlnet, condition, _scales(control), control.start, control.end))
    return prepared
