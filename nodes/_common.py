"""What the node modules share: the pinned node API, socket types, categories, model pickers and ComfyUI type
conversions.

Conversions kept here (and nowhere else):
* IMAGE is ``[B,H,W,3]`` float 0..1 in ComfyUI, ``[B,3,H,W]`` in the core.
* LATENT ``samples`` are *unscaled* SDXL latents in ComfyUI (its ``latent_formats.SDXL`` applies the
  scale inside sampling); the core works on scaled latents (DiT space). So ``samples = scaled / 0.13025``.
* MASK is ``[B,H,W]`` or ``[H,W]`` in ComfyUI, 1 = regenerate; the core takes it as it is
  (``hunyuan_core.images.mask_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.v0_0_2 import (
    io,  # the pinned V3 node API (ComfyUI >= requires-comfyui in pyproject.toml)
)

from hunyuan_core import Control, ImagePrompt, IPAdapter, LoRA
from hunyuan_core.errors import InputError
from hunyuan_core.model.vae import SDXL_SCALING_FACTOR
from hunyuan_core.settings.devices import DTYPES
from hunyuan_core.settings.devices import resolve_dtype as core_resolve_dtype

from . import host

# Menu categories, grouped like ComfyUI's own (loaders, sampling, latent, conditioning).
CATEGORY = "HunyuanDiT"
LOADERS = f"{CATEGORY}/loaders"
SAMPLING = f"{CATEGORY}/sampling"
LATENT = f"{CATEGORY}/latent"
CONDITIONING_CATEGORY = f"{CATEGORY}/conditioning"
REWRITER_CATEGORY = f"{CATEGORY}/rewriter"
UPSCALE_CATEGORY = f"{CATEGORY}/upscale"

# The pack's socket types (ComfyUI's own IMAGE/LATENT/MASK are io.Image/io.Latent/io.Mask).
MODEL = io.Custom("HYDIT_MODEL")
TEXT_ENCODER = io.Custom("HYDIT_TEXT_ENCODER")
VAE = io.Custom("HYDIT_VAE")
CONDITIONING = io.Custom("HYDIT_CONDITIONING")

# ComfyUI's latent_formats.SDXL.scale_factor (the SDXL VAE's scaling factor): LATENT samples are stored divided by it.
SDXL_LATENT_SCALE = SDXL_SCALING_FACTOR

# Folder key for official trees and diffusers folders: ComfyUI/models/hunyuan/<model folder>/.
HUNYUAN_FOLDER = "hunyuan"
host.register_model_folder(HUNYUAN_FOLDER, "hunyuan")


# A handle's LoRAs: ``(lora, strength)`` pairs, in the order the LoRA nodes were chained.
LoRAs = tuple[tuple[LoRA, float], ...]
# A handle's ControlNets: ``(control, vae)`` pairs, the VAE that encodes the control's hint at the sampler's size.
Controls = tuple[tuple[Control, torch.nn.Module], ...]


@dataclass(frozen=True)
class ModelHandle:
    """HYDIT_MODEL: the DiT (its release is ``dit.config.version``), the LoRAs to merge into it, the ControlNets
    to run beside it and the IP-Adapter image prompt to give it.

    Immutable, because ComfyUI caches node outputs and hands one output to every branch of a graph: a LoRA or
    Apply node returns a new handle with one more item, never touching the DiT; the sampler merges the handle's
    LoRAs (``apply_loras``) right before it uses the DiT and passes its controls and image prompt to ``sample``,
    so every branch runs with its own set."""

    dit: torch.nn.Module
    loras: LoRAs = ()
    controls: Controls = ()
    ip_adapter: IPAdapter | None = None
    image_prompt: ImagePrompt | None = None


@dataclass(frozen=True)
class TextEncoderHandle:
    """HYDIT_TEXT_ENCODER: the bilingual encoder and the LoRAs whose BERT (``te1``) parts to merge into it before
    encoding (immutable like :class:`ModelHandle`)."""

    encoder: Any  # hunyuan_core.model.text_encoder.BilingualTextEncoder
    loras: LoRAs = ()


@dataclass
class VAEHandle:
    """HYDIT_VAE: an SDXL-architecture ``AutoencoderKL``."""

    vae: torch.nn.Module


def check_percent_range(what: str, start_percent: float, end_percent: float) -> None:
    """Refuse an Apply node's empty active range (the adapter would never act)."""
    if start_percent >= end_percent:
        raise InputError(f"{what}: start_percent ({start_percent}) must be below end_percent ({end_percent})")


# --------------------------------------------------------------------------------- model pickers
def model_choices(*folders: str) -> list[str]:
    """Picker entries ``"<folder>/<name>"`` for weight files in ``folders`` and model folders in ``hunyuan``."""
    entries = []
    for folder in folders:
        if folder == HUNYUAN_FOLDER:
            entries += [f"{folder}/{name}" for name in host.get_folder_list(folder)]
        else:
            entries += [f"{folder}/{name}" for name in host.get_filename_list(folder)]
    return entries


def resolve_choice(choice: str, folders: tuple[str, ...]) -> str:
    """Absolute path of a picker entry; the error names the folders searched when it is missing."""
    key, sep, name = choice.partition("/")
    if not sep or key not in folders:
        raise InputError(
            f"model '{choice}': expected '<folder>/<name>' with folder one of {', '.join(folders)}"
        )
    return host.get_full_path(key, name)


def resolve_dtype(name: str, device: torch.device, auto: torch.dtype | None = None) -> torch.dtype:
    """The weight dtype for a dtype widget: ``auto`` is ``auto`` when given, else the core's choice for the
    compute ``device`` (fp16 on GPUs, the official precision; fp32 on CPU)."""
    if name not in DTYPES:
        raise InputError(f"dtype '{name}': expected one of {', '.join(DTYPES)}")
    if name == "auto" and auto is not None:
        return auto
    return core_resolve_dtype(name, device)


# ------------------------------------------------------------------------ ComfyUI type conversions
def images_to_core(images: torch.Tensor, keep_alpha: bool = False) -> torch.Tensor:
    """ComfyUI IMAGE ``[B,H,W,C]`` → ``[B,3,H,W]`` float, grey expanded; alpha dropped unless ``keep_alpha``
    (the upscaler carries it through: ``[B,4,H,W]``)."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise InputError(f"IMAGE: expected a [batch, height, width, channels] tensor, got shape {list(images.shape)}")
    images = images[..., : 4 if keep_alpha else 3]
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    return images.permute(0, 3, 1, 2).float()


def images_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """Core images ``[B,3,H,W]`` 0..1 → ComfyUI IMAGE ``[B,H,W,3]`` float32 on the intermediate device."""
    return images.permute(0, 2, 3, 1).float().clamp(0, 1).contiguous().to(host.intermediate_device())


def latent_to_core(latent: dict) -> torch.Tensor:
    """ComfyUI LATENT (unscaled SDXL latents) → scaled latents for the DiT."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        found = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InputError(f"LATENT: expected 'samples' of shape [batch, 4, height/8, width/8], got {found}")
    return samples.float() * SDXL_LATENT_SCALE


def latent_to_comfy(scaled: torch.Tensor) -> dict:
    """Scaled DiT-space latents → ComfyUI LATENT, unscaled, on the intermediate device."""
    return {"samples": (scaled.float() / SDXL_LATENT_SCALE).to(host.intermediate_device())}

