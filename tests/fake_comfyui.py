"""A recording fake of the ComfyUI modules `nodes/host.py` talks to, installed into ``sys.modules``.

Same names and signatures as ComfyUI 0.3.x (``comfy.model_management``, ``comfy.utils.ProgressBar``,
``comfy.latent_formats.SDXL``, ``latent_preview.get_previewer``, ``folder_paths``,
``server.PromptServer.instance.send_progress_text``); every call is appended to ``FakeComfyUI.calls`` so
tests can check that the pack frees memory, reports progress with previews, honours interrupts and
low-VRAM modes, and finds ComfyUI's bundled BERT vocabulary.
"""

from __future__ import annotations

import enum
import os
import sys
import types
from pathlib import Path

import torch
from PIL import Image


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class InterruptProcessingException(Exception):
    pass


class FakeComfyUI:
    """Builds the fake modules rooted at ``root`` (``root/comfy`` holds the bundled tokenizer folder)."""

    def __init__(self, root: Path, models_dir: Path, bert_vocab: Path | None = None):
        self.calls: list[tuple] = []
        self.interrupted = False
        self.previews: list[tuple] = []
        self.texts: list[tuple[str, str]] = []
        self.modules = self._build(root, models_dir, bert_vocab)

    def install(self, monkeypatch) -> None:
        """Put the fake modules into ``sys.modules`` for the duration of a test."""
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)

    def _build(self, root: Path, models_dir: Path, bert_vocab: Path | None) -> dict[str, types.ModuleType]:
        fake = self
        comfy_dir = root / "comfy"
        tok_dir = comfy_dir / "text_encoders" / "hydit_clip_tokenizer"
        tok_dir.mkdir(parents=True, exist_ok=True)
        if bert_vocab is not None:
            (tok_dir / "vocab.txt").write_bytes(Path(bert_vocab).read_bytes())
        comfy = types.ModuleType("comfy")  # like ComfyUI's: a namespace package (no __init__.py, no __file__)
        comfy.__path__ = [str(comfy_dir)]

        mm = types.ModuleType("comfy.model_management")
        mm.VRAMState = VRAMState
        mm.vram_state = VRAMState.NORMAL_VRAM
        mm.InterruptProcessingException = InterruptProcessingException

        def record(name, result=None):
            def call(*args, **kwargs):
                fake.calls.append((name, *args))
                return result
            return call

        mm.get_torch_device = record("get_torch_device", torch.device("cpu"))
        mm.unet_offload_device = record("unet_offload_device", torch.device("cpu"))
        mm.text_encoder_offload_device = record("text_encoder_offload_device", torch.device("cpu"))
        mm.intermediate_device = record("intermediate_device", torch.device("cpu"))
        mm.vae_dtype = record("vae_dtype", torch.float32)
        mm.free_memory = record("free_memory")
        mm.soft_empty_cache = record("soft_empty_cache")

        def interrupt_current_processing(value=True):
            fake.interrupted = value

        def throw_exception_if_processing_interrupted():
            fake.calls.append(("throw_exception_if_processing_interrupted",))
            if fake.interrupted:
                fake.interrupted = False
                raise InterruptProcessingException()

        mm.interrupt_current_processing = interrupt_current_processing
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total = total
                fake.calls.append(("ProgressBar", total))

            def update_absolute(self, value, total=None, preview=None):
                fake.calls.append(("progress", value, total))
                if preview is not None:
                    fake.previews.append(preview)

        utils.ProgressBar = ProgressBar

        latent_formats = types.ModuleType("comfy.latent_formats")

        class SDXL:
            scale_factor = 0.13025
            latent_rgb_factors = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
                                  [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]

        latent_formats.SDXL = SDXL

        preview = types.ModuleType("latent_preview")

        class Previewer:
            def __init__(self, factors):
                self.factors = torch.tensor(factors)

            def decode_latent_to_preview_image(self, preview_format, x0):
                rgb = (x0[0].movedim(0, -1).cpu().float() @ self.factors + 1) / 2
                image = Image.fromarray((rgb.clamp(0, 1) * 255).byte().numpy())
                return (preview_format, image, 512)

        preview.get_previewer = lambda device, latent_format: Previewer(latent_format.latent_rgb_factors)

        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(models_dir)
        folder_paths.folder_names_and_paths = {
            "checkpoints": ([str(models_dir / "checkpoints")], {".safetensors", ".ckpt", ".pt"}),
            "diffusion_models": (
                [str(models_dir / "unet"), str(models_dir / "diffusion_models")], {".safetensors", ".pt"},
            ),
            "text_encoders": ([str(models_dir / "text_encoders"), str(models_dir / "clip")], {".safetensors", ".bin"}),
            "vae": ([str(models_dir / "vae")], {".safetensors", ".pt"}),
        }

        def add_model_folder_path(key, path, is_default=False):
            paths, exts = folder_paths.folder_names_and_paths.setdefault(key, ([], set()))
            if path not in paths:
                paths.append(path)

        def get_folder_paths(key):
            return folder_paths.folder_names_and_paths[key][0][:]

        def get_filename_list(key):
            paths, exts = folder_paths.folder_names_and_paths[key]
            names = set()
            for base in paths:
                for dirpath, _dirs, files in os.walk(base):
                    for f in files:
                        if not exts or os.path.splitext(f)[1] in exts:
                            names.add(os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/"))
            return sorted(names)

        def get_full_path(key, name):
            if key not in folder_paths.folder_names_and_paths:
                return None
            for base in folder_paths.folder_names_and_paths[key][0]:
                path = os.path.join(base, name)
                if os.path.isfile(path):
                    return path
            return None

        folder_paths.get_user_directory = lambda: str(root / "user")
        folder_paths.add_model_folder_path = add_model_folder_path
        folder_paths.get_folder_paths = get_folder_paths
        folder_paths.get_filename_list = get_filename_list
        folder_paths.get_full_path = get_full_path

        server = types.ModuleType("server")

        class PromptServer:
            instance = None

            def send_progress_text(self, text, node_id, sid=None):
                fake.texts.append((str(node_id), text))

        PromptServer.instance = PromptServer()
        server.PromptServer = PromptServer

        comfy.model_management, comfy.utils, comfy.latent_formats = mm, utils, latent_formats
        return {
            "comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils,
            "comfy.latent_formats": latent_formats, "latent_preview": preview,
            "folder_paths": folder_paths, "server": server,
        }
