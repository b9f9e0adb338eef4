"""VAE decode (LATENT → IMAGE, optionally tiled) and encode (IMAGE → LATENT) with the SDXL VAE."""

from __future__ import annotations

import torch

from hunyuan_core.model.vae import decode_latents, encode_images
from hunyuan_core.settings.sizes import MULTIPLE

from . import host
from ._common import (
    CATEGORY,
    VAE,
    VAEHandle,
    images_to_comfy,
    images_to_core,
    latent_to_comfy,
    latent_to_core,
    on_compute_device,
)


def _rest_device() -> torch.device | None:
    """The VAE is small: it stays on the GPU except in ComfyUI's low-VRAM modes."""
    return host.offload_device() if host.low_vram() else None


class HunyuanDiTVAEDecode:
    """LATENT (unscaled SDXL latents, any source) → IMAGE."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "Latents from the HunyuanDiT Sampler (or any SDXL-latent node)."}),
                "vae": (VAE, {"tooltip": "The SDXL VAE from a HunyuanDiT loader."}),
                "tiled": ("BOOLEAN", {"default": False, "tooltip": (
                    "Decode in overlapping tiles: much less memory for large images, nearly identical result."
                )}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Decodes latents to images with the SDXL VAE."

    def decode(self, samples: dict, vae: VAEHandle, tiled: bool):
        scaled = latent_to_core(samples)
        with on_compute_device(vae.vae, _rest_device()):
            images = decode_latents(vae.vae, scaled, tiled=tiled)
        return (images_to_comfy(images),)


class HunyuanDiTVAEEncode:
    """IMAGE → LATENT, for img2img and inpainting."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": (
                    "Images to encode; cropped (centred) to a multiple of 16 px, as the DiT needs."
                )}),
                "vae": (VAE, {"tooltip": "The SDXL VAE from a HunyuanDiT loader."}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Unscaled SDXL latents (ComfyUI's convention).",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes images to latents with the SDXL VAE (the start of img2img and inpainting)."

    def encode(self, image: torch.Tensor, vae: VAEHandle):
        pixels = images_to_core(image)
        h, w = pixels.shape[2] // MULTIPLE * MULTIPLE, pixels.shape[3] // MULTIPLE * MULTIPLE
        top, left = (pixels.shape[2] - h) // 2, (pixels.shape[3] - w) // 2
        pixels = pixels[:, :, top : top + h, left : left + w]
        with on_compute_device(vae.vae, _rest_device()):
            # a fixed generator: the same image always encodes to the same latent, as ComfyUI's cache expects
            scaled = encode_images(vae.vae, pixels, generator=torch.Generator().manual_seed(0))
        return (latent_to_comfy(scaled),)


NODE_CLASS_MAPPINGS = {"HunyuanDiTVAEDecode": HunyuanDiTVAEDecode, "HunyuanDiTVAEEncode": HunyuanDiTVAEEncode}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HunyuanDiTVAEDecode": "HunyuanDiT VAE Decode",
    "HunyuanDiTVAEEncode": "HunyuanDiT VAE Encode",
}
