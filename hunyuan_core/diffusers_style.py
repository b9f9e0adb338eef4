"""The diffusers spellings ``HunyuanDiTPipeline.__call__`` accepts beside its own names, so code written for
``diffusers.HunyuanDiTPipeline`` runs unchanged: argument aliases, ``generator`` -> seeds, ``output_type``.

Our names are the documented ones; an alias means exactly the same, and giving both with different values is
an :class:`InputError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .images import tensor_to_pil
from .settings.sizes import MULTIPLE

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# What ``callback_on_step_end`` may ask for and replace: the latents (prompt embeddings stay fixed here, their
# DiT context is computed once per run).
STEP_END_TENSORS = ("latents",)


def pick(name: str, ours: object, alias: str, theirs: object, default: object) -> object:
    """The value of a setting given as ``name`` and/or its diffusers alias; neither -> ``default``."""
    if theirs is None:
        return default if ours is None else ours
    if ours is not None and ours != theirs:
        raise InputError(f"{name}={ours!r} and its diffusers alias {alias}={theirs!r} disagree: give one of them")
    return theirs


def generator_seeds(generator: torch.Generator | Sequence[torch.Generator]) -> int | list[int]:
    """Seeds from diffusers-style generators: one generator -> its ``initial_seed()``, used as ``seed`` (image i
    then uses ``seed + i``); a list -> one generator per image, image i uses ``generator[i].initial_seed()``.

    Only the seed a generator was created with counts (its device and how far it was drawn from do not): each
    image draws from a fresh CPU generator with that seed, so the call is reproducible on any device.
    """
    if isinstance(generator, torch.Generator):
        return generator.initial_seed()
    if isinstance(generator, (list, tuple)) and generator and all(isinstance(g, torch.Generator) for g in generator):
        return [g.initial_seed() for g in generator]
    raise InputError(f"generator must be a torch.Generator or a list of them, found {type(generator).__name__}")


def check_output_type(output_type: object) -> str:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; found {output_type!r}")
    return output_type


def check_step_end_tensors(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in STEP_END_TENSORS]
    if unknown:
        raise InputError(f"callback_on_step_end_tensor_inputs may name {', '.join(STEP_END_TENSORS)}; found {unknown}")
    return list(names)


def image_size(image: Image.Image | torch.Tensor, width: int | None, height: int | None) -> tuple[int | None, int | None]:
    """img2img's default size: each side not given is the input image's, rounded to a multiple of 16 (with a
    warning when rounding changed it), as diffusers sizes img2img by its input."""
    if width is not None and height is not None:
        return width, height
    if isinstance(image, Image.Image):
        found_w, found_h = image.size
    elif isinstance(image, torch.Tensor) and image.ndim >= 2:
        found_h, found_w = image.shape[-2:]
    else:
        return width, height  # prepare_image names what is wrong with it
    snap = lambda v: max(MULTIPLE, round(v / MULTIPLE) * MULTIPLE)  # noqa: E731
    w, h = (width if width is not None else snap(found_w)), (height if height is not None else snap(found_h))
    if (width is None and w != found_w) or (height is None and h != found_h):
        warnings.warn(f"the input image is {found_w}x{found_h}; it is resized to {w}x{h} (sides must be multiples "
                      f"of {MULTIPLE} px): pass width and height to choose", UserWarning, stacklevel=3)
    return w, h


def to_output(pixels: torch.Tensor, output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor:
    """Decoded ``[B,3,H,W]`` pixels in 0..1 as diffusers returns them: PIL images, a ``[B,H,W,3]`` float32 array
    or the ``[B,3,H,W]`` tensor itself."""
    if output_type == "pil":
        return [tensor_to_pil(p[None]) for p in pixels]
    if output_type == "np":
        return pixels.permute(0, 2, 3, 1).float().cpu().numpy()
    return pixels.float().cpu()
