"""The SDXL VAE (diffusers ``AutoencoderKL``) at run time: encode/decode in DiT latent space, tiled decode.

Latents handed to and returned by this module are *scaled* (DiT space): ``z_dit = (z_vae - shift) * scaling``
with SDXL's scaling factor 0.13025 (reference/hunyuandit-official.md §3). Reading a VAE from disk is
:mod:`hunyuan_core.formats.vae_files`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..settings.devices import free_memory
from ..tiling import plan_tiles, run_tiles

SDXL_SCALING_FACTOR = 0.13025
SDXL_SAMPLE_SIZE = 1024


def _scale(vae) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def _spatial_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_bytes(vae, latents: torch.Tensor) -> int:
    """Activation memory a whole decode of ``latents`` needs [estimate]: the decoder's last upsampler and up block
    run at full resolution on the second level's channels (256 for SDXL), about four such tensors alive at once."""
    b, _, h, w = latents.shape
    f = _spatial_factor(vae)
    channels = vae.config.block_out_channels[min(1, len(vae.config.block_out_channels) - 1)]
    return 4 * b * h * f * w * f * channels * latents.element_size()


def decode_needs_tiles(vae, latents: torch.Tensor) -> bool:
    """Whether a whole decode would not fit in the free memory of the latents' device (never on the CPU, whose
    memory the operating system extends)."""
    if latents.device.type == "cpu":
        return False
    free = free_memory(latents.device)
    return free is not None and decode_bytes(vae, latents) > free


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


def encode_images(vae, images: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None,
                  mode: bool = False) -> torch.Tensor:
    """Images [B,3,H,W] in 0..1 (H, W multiples of 8) -> scaled latents [B,C,H/8,W/8] float32, sampled
    from the posterior as the official pipeline does (``latent_dist.sample() * scaling_factor``), or its
    ``mode`` (deterministic: ControlNet hints, as ComfyUI encodes them).

    A list of generators gives one latent per generator, image i drawn from generator i (one image: each
    generator draws its own sample of it), so every latent equals its image encoded alone with its generator."""
    f = _spatial_factor(vae)
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels or images.shape[2] % f or images.shape[3] % f:
        raise InputError(
            f"images must be [B, {vae.config.in_channels}, H, W] with H and W multiples of {f}; got shape {tuple(images.shape)}"
        )
    per_image = isinstance(generator, Sequence)
    if per_image and len(images) not in (1, len(generator)):
        raise InputError(f"{len(images)} images for {len(generator)} generators: give one image, or one per generator")
    sf, shift = _scale(vae)
    param = next(vae.parameters())
    x = images.to(device=param.device, dtype=param.dtype) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x, return_dict=False)[0]
        if mode:
            z = posterior.mode()
        elif per_image and len(images) == 1:
            z = torch.cat([posterior.sample(generator=g) for g in generator])
        else:
            z = posterior.sample(generator=list(generator) if per_image else generator)
    return ((z - shift) * sf).float()
