"""The SDXL VAE (diffusers ``AutoencoderKL``): loading from every layout, encode/decode in DiT latent space.

Latents handed to and returned by this module are *scaled* (DiT space): ``z_dit = (z_vae - shift) * scaling``
with SDXL's scaling factor 0.13025 (reference/hunyuandit-official.md §3). Weights are read through
:mod:`hunyuan_core.formats.files` and materialised once, in the requested dtype and device, into a model built on
the meta device. ComfyUI all-in-one files store the VAE with the original LDM names; those are converted
by diffusers' own converter with a configuration inferred from the weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import InputError, ModelFileError
from ..formats.files import offline, read_folder_state_dict, read_json_object, tensor_shape
from ..settings.devices import resolve_device, resolve_dtype
from ..tiling import plan_tiles, run_tiles
from .materialise import build_with_weights

SDXL_SCALING_FACTOR = 0.13025
SDXL_SAMPLE_SIZE = 1024
LDM_NORM_GROUPS = 32  # GroupNorm group count is not stored in weights; every LDM/SDXL VAE uses 32

# Attention names of VAE files saved by diffusers < 0.15 (still found in old downloads) -> current names.
_OLD_ATTENTION_NAMES = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))


def _assemble(config: dict, sd: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype, what: str):
    """``AutoencoderKL(config)`` with ``sd`` assigned once in dtype/device; ``config`` is a dict (never a name
    diffusers could look up on the hub) and the hub is off while diffusers runs."""
    from diffusers import AutoencoderKL

    with offline():
        return build_with_weights(lambda: AutoencoderKL.from_config(dict(config)), sd, device, dtype, what)


def load_vae_from_folder(folder: str | os.PathLike, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None):
    """Load a diffusers-style VAE folder (diffusers ``vae/``, official ``sdxl-vae-fp16-fix/``)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    folder = Path(folder)
    what = f"VAE folder '{folder}'"
    if not folder.is_dir():
        raise ModelFileError(f"VAE not found: expected a folder at '{folder}'" + (" but it is a file" if folder.exists() else ""))
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(f"{what} has no config.json")
    config = read_json_object(cfg_path, what)
    sd = read_folder_state_dict(folder, what)
    for old, new in _OLD_ATTENTION_NAMES:
        sd = {k.replace(old, new): v for k, v in sd.items()}
    return _assemble(config, sd, device, dtype, what)


def vae_config_from_ldm(sd: Mapping[str, torch.Tensor]) -> dict:
    """AutoencoderKL config read off LDM-named VAE weights; what weights cannot tell is SDXL's value
    (scaling factor 0.13025, sample size 1024, 32 GroupNorm groups)."""
    what = "LDM VAE weights"
    levels = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    config = {
        "in_channels": tensor_shape(sd, "encoder.conv_in.weight", 4, what)[1],
        "out_channels": tensor_shape(sd, "decoder.conv_out.weight", 4, what)[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [tensor_shape(sd, f"encoder.down.{i}.block.0.conv1.weight", 4, what)[0] for i in range(levels)],
        "layers_per_block": layers,
        "latent_channels": tensor_shape(sd, "decoder.conv_in.weight", 4, what)[1],
        "norm_num_groups": LDM_NORM_GROUPS,
        "sample_size": SDXL_SAMPLE_SIZE,
        "scaling_factor": SDXL_SCALING_FACTOR,
    }
    if "encoder.mid.attn_1.q.weight" not in sd:
        config["mid_block_add_attention"] = False
    return config


def load_vae_from_ldm_state_dict(sd: Mapping[str, torch.Tensor], device: torch.device | str | None = None,
                                 dtype: torch.dtype | None = None):
    """Load an LDM-named VAE (``encoder.down.0.block.0...``; a ComfyUI all-in-one file's ``vae.*`` with the
    prefix already stripped), converted to diffusers names by diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    what = "LDM VAE weights"
    for probe in ("encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight", "decoder.conv_out.weight"):
        if probe not in sd:
            raise ModelFileError(
                f"{what}: expected LDM key '{probe}'; found {len(sd)} tensors such as {', '.join(list(sd)[:4]) or 'none'}"
            )
    config = vae_config_from_ldm(sd)
    try:
        converted = convert_ldm_vae_checkpoint(dict(sd), config)
    except KeyError as exc:
        raise ModelFileError(f"{what}: incomplete VAE: expected a tensor {exc} that the file lacks") from None
    return _assemble(config, converted, device, dtype, what)


def _scale(vae) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def _spatial_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_latents(vae, latents: torch.Tensor, tiled: bool = False, *, tile_size: int = 64,
                   tile_overlap: int = 16) -> torch.Tensor:
    """Scaled latents [B,C,h,w] -> images [B,3,8h,8w] float32 in 0..1.

    ``tiled`` decodes windows of at most ``tile_size`` latents (64 = 512 px) sharing at least ``tile_overlap``
    and cross-fades them (:mod:`hunyuan_core.tiling`, as the upscaler), so memory stays bounded for large
    images; the result differs from a whole decode only by the decoder's GroupNorm statistics being per
    window, which the cross-fades keep seamless.
    """
    if latents.ndim != 4:
        raise InputError(f"latents must be [B, C, h, w]; got shape {tuple(latents.shape)}")
    if not 0 <= tile_overlap < tile_size / 2:
        raise InputError(f"tile_overlap must be in [0, tile_size/2); got tile_size={tile_size}, tile_overlap={tile_overlap}")
    sf, shift = _scale(vae)
    param = next(vae.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / sf + shift

    def decode(window: torch.Tensor) -> torch.Tensor:
        return vae.decode(window, return_dict=False)[0]

    with torch.no_grad():
        if tiled:
            plan = plan_tiles(z.shape[-2], z.shape[-1], tile_size, tile_overlap)
            x = run_tiles(decode, z, _spatial_factor(vae), plan, margin=0.0)
        else:
            x = decode(z)
    return (x.float() / 2 + 0.5).clamp(0, 1)


def encode_images(vae, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [B,3,H,W] in 0..1 (H, W multiples of 8) -> scaled latents [B,C,H/8,W/8] float32, sampled
    from the posterior as the official pipeline does (``latent_dist.sample() * scaling_factor``)."""
    f = _spatial_factor(vae)
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels or images.shape[2] % f or images.shape[3] % f:
        raise InputError(
            f"images must be [B, {vae.config.in_channels}, H, W] with H and W multiples of {f}; got shape {tuple(images.shape)}"
        )
    sf, shift = _scale(vae)
    param = next(vae.parameters())
    x = images.to(device=param.device, dtype=param.dtype) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x, return_dict=False)[0].sample(generator=generator)
    return ((z - shift) * sf).float()
