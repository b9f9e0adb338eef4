"""Adapters that change a loaded model: LoRA (read every format in the wild, merge in place, restore exactly) and
the IP-Adapter (an image-prompt branch in every cross-attention, with its CLIP image encoder)."""

from .image_encoder import ImageEncoder, convert_image_encoder
from .ip_adapter import IPAdapter, load_ip_adapter
from .lora import LoRA, load_lora
from .merge import apply_loras

__all__ = ["IPAdapter", "ImageEncoder", "LoRA", "apply_loras", "convert_image_encoder", "load_ip_adapter", "load_lora"]
