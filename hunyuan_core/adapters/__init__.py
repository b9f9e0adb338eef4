"""Adapters that change a loaded model: LoRA (read every format in the wild, merge in place, restore exactly)."""

from .lora import LoRA, load_lora
from .merge import apply_loras

__all__ = ["LoRA", "apply_loras", "load_lora"]
