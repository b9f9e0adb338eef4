"""The SDXL VAE (diffusers ``AutoencoderKL``) at run time: encode/decode in DiT latent space, tiled decode.

Latents handed to and returned by this module are *scaled* (DiT space): ``z_dit = (z_vae - shift) * scaling``
with SDXL's scaling factor 0.13025 (reference/hunyuandit-official.md §3). Reading a VAE from disk is
:mod:`hunyuan_core.formats.vae_files`.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

SDXL_SCALING_FACTOR = 0.13025
SDXL_SAMPLE_SIZE = 1024


def _scale(vae) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def _spatial_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _tile_spans(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spaced windows of length ``tile`` covering ``0..n``, neighbours overlapping by at least ``overlap``."""
    if n <= tile:
        return [(0, n)]
    count = math.ceil((n - overlap) / (tile - overlap))
    return [(s, s + tile) for s in (round(i * (n - tile) / (count - 1)) for i in range(count))]


def _ramp(spans: list[tuple[int, int]], i: int, f: int, device: torch.device) -> torch.Tensor:
    """Blend weights along one axis for window ``i`` in pixels: linear cross-fades over the overlaps with
    the neighbouring windows (complementary, so two overlapping windows sum to 1), 1 elsewhere."""
    s, e = spans[i]
    w = torch.ones((e - s) * f, device=device)
    ov = (spans[i - 1][1] - s) * f if i > 0 else 0
    if ov > 0:
        w[:ov] = torch.minimum(w[:ov], (torch.arange(ov, device=device) + 0.5) / ov)
    ov = (e - spans[i + 1][0]) * f if i + 1 < len(spans) else 0
    if ov > 0:
        w[-ov:] = torch.minimum(w[-ov:], ((torch.arange(ov, device=device) + 0.5) / ov).flip(0))
    return w


def _decode_tiled(vae, z: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Decode overlapping latent windows one at a time and cross-fade them (weights normalised per pixel)."""
    f = _spatial_factor(vae)
    b, _, h, w = z.shape
    rows, cols = _tile_spans(h, tile, overlap), _tile_spans(w, tile, overlap)
    out = torch.zeros(b, vae.config.out_channels, h * f, w * f, device=z.device)
    norm = torch.zeros(h * f, w * f, device=z.device)
    for i, (y0, y1) in enumerate(rows):
        wy = _ramp(rows, i, f, z.device)
        for j, (x0, x1) in enumerate(cols):
            weight = wy[:, None] * _ramp(cols, j, f, z.device)[None, :]
            piece = vae.decode(z[:, :, y0:y1, x0:x1], return_dict=False)[0].float()
            out[:, :, y0 * f:y1 * f, x0 * f:x1 * f] += piece * weight
            norm[y0 * f:y1 * f, x0 * f:x1 * f] += weight
    return out / norm


def decode_latents(vae, latents: torch.Tensor, tiled: bool = False, *, tile_size: int = 64,
                   tile_overlap: int = 16) -> torch.Tensor:
    """Scaled latents [B,C,h,w] -> images [B,3,8h,8w] float32 in 0..1.

    ``tiled`` decodes windows of ``tile_size`` latents (64 = 512 px) overlapping by ``tile_overlap`` and
    cross-fades them, so memory stays bounded for large images; the result differs from a whole decode
    only by the decoder's GroupNorm statistics being per window, which the cross-fades keep seamless.
    """
    if latents.ndim != 4:
        raise InputError(f"latents must be [B, C, h, w]; got shape {tuple(latents.shape)}")
    if not 0 <= tile_overlap < tile_size / 2:
        raise InputError(f"tile_overlap must be in [0, tile_size/2); got tile_size={tile_size}, tile_overlap={tile_overlap}")
    sf, shift = _scale(vae)
    param = next(vae.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / sf + shift
    with torch.no_grad():
        x = _decode_tiled(vae, z, tile_size, tile_overlap) if tiled else vae.decode(z, return_dict=False)[0]
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
