"""Test stand-ins for the ComfyUI side of a workflow: the pack as ComfyUI loads it, and the core
ComfyUI nodes our workflows use (LoadImage, SaveImage, PreviewImage) with ComfyUI's exact
``INPUT_TYPES``/``RETURN_TYPES``, working on folders the test chooses.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the pack's `nodes` package lives at the repository root
    sys.path.insert(0, str(ROOT))

INPUT_DIR_ENV = "HUNYUAN_TEST_INPUT_DIR"
OUTPUT_DIR_ENV = "HUNYUAN_TEST_OUTPUT_DIR"


def load_pack_like_comfyui(pack_dir: Path = ROOT) -> ModuleType:
    """Import the pack folder the way ComfyUI's ``load_custom_node`` does (by path, under a mangled name)."""
    name = str(pack_dir).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, pack_dir / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LoadImage:
    """ComfyUI's LoadImage: an image from the input folder; MASK = 1 - alpha (64x64 zeros without alpha)."""

    @classmethod
    def INPUT_TYPES(cls):
        folder = os.environ.get(INPUT_DIR_ENV, "")
        files = sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))) if folder else []
        return {"required": {"image": (files, {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image):
        img = Image.open(os.path.join(os.environ[INPUT_DIR_ENV], image))
        rgb = torch.from_numpy(np.array(img.convert("RGB")).astype(np.float32) / 255.0)[None]
        if "A" in img.getbands():
            mask = 1.0 - torch.from_numpy(np.array(img.getchannel("A")).astype(np.float32) / 255.0)
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return rgb, mask.unsqueeze(0)


class SaveImage:
    """ComfyUI's SaveImage: PNGs into the output folder, reported under ``ui.images``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        folder = Path(os.environ[OUTPUT_DIR_ENV])
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for i, image in enumerate(images):
            name = f"{filename_prefix}_{i:05}_.png"
            Image.fromarray((image.cpu().numpy() * 255).clip(0, 255).astype(np.uint8)).save(folder / name)
            results.append({"filename": name, "subfolder": "", "type": "output"})
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """ComfyUI's PreviewImage: like SaveImage, into the temp folder, no prefix widget."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, filename_prefix="ComfyUI_temp", prompt=None, extra_pnginfo=None):
        return super().save_images(images, filename_prefix, prompt, extra_pnginfo)


CORE_NODES: dict[str, type] = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage}
