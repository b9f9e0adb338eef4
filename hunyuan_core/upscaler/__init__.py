"""Super-resolution for HunyuanDiT results: ESRGAN-family and Real-ESRGAN compact models, tiled.

``hy.load_upscaler(path)`` detects the architecture and scale from the weights; the returned
:class:`Upscaler` takes PIL images or ``[B, C, H, W]`` tensors of any size.
"""

from .upscaler import Upscaler, load_upscaler, upscale_images

__all__ = ["Upscaler", "load_upscaler", "upscale_images"]
