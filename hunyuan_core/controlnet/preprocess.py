"""Hints made the way the ControlNets' training data was (reference/wave2/controlnet.md §4), with no downloads:
``canny`` (``cv2.Canny`` 100/200 on the RGB image, one channel repeated to three), ``depth`` (transformers'
depth-estimation pipeline on a local DPT folder, repeated to three channels) and ``inpaint_hint`` (TTPlanet's
inpainting ControlNet: the image with the masked pixels black). Pose, lineart and tile hints come ready-made.

Each takes a PIL image or a ``[B, 3, H, W]`` tensor in 0..1 and returns the same kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, ModelFileError
from ..formats.files import offline
from ..images import mask_batch, pil_to_tensor, tensor_to_pil

Picture = Image.Image | torch.Tensor


def _per_image(image: Picture, make: Callable[[Image.Image], Image.Image]) -> Picture:
    """``make`` on a PIL image, or on each row of a ``[B, C, H, W]`` tensor (returned as a tensor)."""
    if isinstance(image, Image.Image):
        return make(image.convert("RGB"))
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        found = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"expected a PIL image or a [B, 3, H, W] tensor in 0..1; got {found}")
    return torch.cat([pil_to_tensor(make(tensor_to_pil(row[None]))) for row in image]).to(image.device)


def canny(image: Picture, low: int = 100, high: int = 200) -> Picture:
    """White edges on black, exactly ``cv2.Canny(rgb_uint8, low, high)`` repeated to 3 channels (the official
    training's hint). Needs OpenCV: ``pip install opencv-python-headless`` (the ``[controlnet]`` extra)."""
    try:
        import cv2
    except ImportError:
        raise InputError("the canny preprocessor needs OpenCV: pip install opencv-python-headless "
                         "(or pip install 'hunyuan-dit-comfy[controlnet]')") from None
    if not 0 <= low <= high:
        raise InputError(f"canny thresholds must satisfy 0 <= low <= high; got low={low}, high={high}")

    def edges(rgb: Image.Image) -> Image.Image:
        return Image.fromarray(cv2.Canny(np.asarray(rgb), low, high)).convert("RGB")

    return _per_image(image, edges)


def depth(image: Picture, model_dir: str | os.PathLike) -> Picture:
    """Relative inverse depth (near = bright) from a local DPT model folder (e.g. ``Intel/dpt-large``, the
    training's estimator) through transformers' depth-estimation pipeline, repeated to 3 channels. The folder
    is read offline; nothing is downloaded."""
    folder = Path(model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"depth model folder '{folder}' has no config.json; expected a local transformers "
                             "depth-estimation model folder such as Intel/dpt-large")
    from transformers import pipeline

    with offline():
        estimator = pipeline("depth-estimation", model=str(folder), local_files_only=True, device="cpu")
    return _per_image(image, lambda rgb: estimator(rgb)["depth"].convert("RGB"))


def inpaint_hint(image: Picture, mask: Picture) -> Picture:
    """The hint of TTPlanet's inpainting ControlNet: ``image`` with the pixels to repaint (``mask`` >= 0.5:
    white in a PIL mask, 1 in a tensor mask of any ComfyUI MASK shape) set to black."""
    if isinstance(image, Image.Image):
        if not isinstance(mask, Image.Image):
            raise InputError(f"a PIL image takes a PIL mask; got {type(mask).__name__}")
        rgb = image.convert("RGB")
        keep = np.asarray(mask.convert("L").resize(rgb.size, Image.NEAREST)) < 128
        return Image.fromarray(np.asarray(rgb) * keep[:, :, None].astype(np.uint8))
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or not isinstance(mask, torch.Tensor):
        raise InputError("inpaint_hint takes a PIL image and mask, or a [B, 3, H, W] tensor and a tensor mask")
    m = mask_batch(mask.to(image.device), image.shape[0])
    if m.shape[-2:] != image.shape[-2:]:
        m = torch.nn.functional.interpolate(m, size=image.shape[-2:], mode="nearest")
    return image * (m < 0.5)
