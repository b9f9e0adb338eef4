"""VAE decode (LATENT → IMAGE, optionally tiled) and encode (IMAGE → LATENT) with the SDXL VAE."""

from __future__ import annotations

import torch

from hunyuan_core.model.vae import decode_latents, encode_images
from hunyuan_core.settings.sizes import MULTIPLE

from . import host
from ._common import (
    LATENT,
    VAE,
    VAEHandle,
    images_to_comfy,
    images_to_core,
    io,
    latent_to_comfy,
    latent_to_core,
)
from .memory import on_compute_device

# ComfyUI's work-memory rule for the SDXL VAE (comfy/sd.py, AutoencoderKL), in elements of the VAE's dtype: per
# latent pixel decoded and per image pixel encoded. It is the room ComfyUI makes before the VAE runs, evicting
# e.g. the DiT that it now keeps loaded after sampling.
DECODE_ELEMENTS_PER_LATENT_PIXEL = 2178 * 64
ENCODE_ELEMENTS_PER_PIXEL = 1767
DECODE_TILE = 64  # decode_latents' default window, in latents


def decode_memory(latents: torch.Tensor, dtype: torch.dtype, tiled: bool) -> int:
    """Bytes a decode of ``latents`` ``[B,4,h,w]`` needs besides the weights (one window at a time when tiled)."""
    h, w = latents.shape[2:]
    if tiled:
        h, w = min(h, DECODE_TILE), min(w, DECODE_TILE)
    return latents.shape[0] * h * w * DECODE_ELEMENTS_PER_LATENT_PIXEL * dtype.itemsize


def encode_memory(pixels: torch.Tensor, dtype: torch.dtype) -> int:
    """Bytes an encode of ``pixels`` ``[B,3,H,W]`` needs besides the weights."""
    return pixels.shape[0] * pixels.shape[2] * pixels.shape[3] * ENCODE_ELEMENTS_PER_PIXEL * dtype.itemsize


class HunyuanDiTVAEDecode(io.ComfyNode):
    """LATENT (unscaled SDXL latents, any source) → IMAGE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTVAEDecode",
            display_name="HunyuanDiT VAE Decode",
            category=LATENT,
            description="Decodes latents to images with the SDXL VAE.",
            inputs=[
                io.Latent.Input("samples", tooltip="Latents from the HunyuanDiT Sampler (or any SDXL-latent node)."),
                VAE.Input("vae", tooltip="The SDXL VAE from a HunyuanDiT loader."),
                io.Boolean.Input("tiled", default=False, tooltip=(
                    "Decode in overlapping tiles: much less memory for large images, nearly identical result."
                )),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The decoded images.")],
        )

    @classmethod
    def execute(cls, samples: dict, vae: VAEHandle, tiled: bool) -> io.NodeOutput:
        scaled = latent_to_core(samples)
        work = decode_memory(scaled, vae.vae.dtype, tiled)
        with on_compute_device(vae.vae, offload_device=host.vae_offload_device(), memory_required=work):
            images = decode_latents(vae.vae, scaled, tiled=tiled, tile_size=DECODE_TILE)
        return io.NodeOutput(images_to_comfy(images))


class HunyuanDiTVAEEncode(io.ComfyNode):
    """IMAGE → LATENT, for img2img and inpainting."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTVAEEncode",
            display_name="HunyuanDiT VAE Encode",
            category=LATENT,
            description="Encodes images to latents with the SDXL VAE (the start of img2img and inpainting).",
            inputs=[
                io.Image.Input("image", tooltip=(
                    "Images to encode; cropped (centred) to a multiple of 16 px, as the DiT needs."
                )),
                VAE.Input("vae", tooltip="The SDXL VAE from a HunyuanDiT loader."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Unscaled SDXL latents (ComfyUI's convention).")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, vae: VAEHandle) -> io.NodeOutput:
        pixels = images_to_core(image)
        h, w = pixels.shape[2] // MULTIPLE * MULTIPLE, pixels.shape[3] // MULTIPLE * MULTIPLE
        top, left = (pixels.shape[2] - h) // 2, (pixels.shape[3] - w) // 2
        pixels = pixels[:, :, top : top + h, left : left + w]
        with on_compute_device(vae.vae, offload_device=host.vae_offload_device(),
                               memory_required=encode_memory(pixels, vae.vae.dtype)):
            # a fixed generator per image: an image always encodes to the same latent, alone or in any batch
            generators = [torch.Generator().manual_seed(0) for _ in range(len(pixels))]
            scaled = encode_images(vae.vae, pixels, generator=generators)
        return io.NodeOutput(latent_to_comfy(scaled))


NODES = [HunyuanDiTVAEDecode, HunyuanDiTVAEEncode]
