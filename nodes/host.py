"""Host services for the node pack: devices, memory, progress, interruption and model folders.

This module and ``nodes/memory.py`` (ComfyUI's model management for our models) are the only ones that talk
to ComfyUI, and they do so lazily: ComfyUI counts as present when it has already imported
``comfy.model_management`` / ``folder_paths`` itself (it always has by the time it loads custom nodes). Outside ComfyUI — scripts, tests — every function falls back
to something sensible: CUDA when available else CPU, no-op progress, an in-process interrupt flag, and
model folders under ``$HUNYUAN_MODELS_DIR`` laid out like ComfyUI's ``models/`` directory.
The core (`hunyuan_core`) never imports this module: nodes pass these services in as plain callables.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from hunyuan_core.errors import ModelFileError
from hunyuan_core.settings.devices import release_cached_memory, resolve_device

MODELS_DIR_ENV = "HUNYUAN_MODELS_DIR"

# Weight-file suffixes listed in model pickers (ComfyUI's supported_pt_extensions).
WEIGHT_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl")

# Sub-folders of models/ behind each folder key, as ComfyUI registers them; keys added with
# register_model_folder() join this table.
_FALLBACK_SUBDIRS: dict[str, list[str]] = {
    "checkpoints": ["checkpoints"],
    "diffusion_models": ["unet", "diffusion_models"],
    "text_encoders": ["text_encoders", "clip"],
    "vae": ["vae"],
    "vae_approx": ["vae_approx"],
    "upscale_models": ["upscale_models"],
    "loras": ["loras"],
    "controlnet": ["controlnet", "t2i_adapter"],
    "diffusers": ["diffusers"],
}
_LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}

_interrupt = threading.Event()


class ProcessingInterrupted(Exception):
    """Raised by the fallback :func:`cancel_callback` after :func:`request_interrupt` (outside ComfyUI)."""


def _model_management() -> ModuleType | None:
    """ComfyUI's ``comfy.model_management`` when ComfyUI is the host, else None."""
    return sys.modules.get("comfy.model_management")


def _folder_paths() -> ModuleType | None:
    """ComfyUI's ``folder_paths`` when ComfyUI is the host, else None."""
    return sys.modules.get("folder_paths")


def in_comfyui() -> bool:
    """True when running inside a ComfyUI process."""
    return _model_management() is not None


# ----------------------------------------------------------------------------------------- devices
def torch_device() -> torch.device:
    """The device models compute on (ComfyUI's ``get_torch_device()``)."""
    mm = _model_management()
    return mm.get_torch_device() if mm is not None else resolve_device(None)


def offload_device() -> torch.device:
    """Where the DiT and upscalers load and rest when ComfyUI unloads them: the GPU only in ComfyUI's high-VRAM
    mode, else the CPU (``unet_offload_device()``)."""
    mm = _model_management()
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def vae_offload_device() -> torch.device:
    """Where the VAE rests between decodes (ComfyUI's ``vae_offload_device()``: the GPU only with ``--gpu-only``)."""
    mm = _model_management()
    return mm.vae_offload_device() if mm is not None else torch.device("cpu")


def text_encoder_offload_device() -> torch.device:
    """Where the text encoders rest after encoding (ComfyUI's ``text_encoder_offload_device()``)."""
    mm = _model_management()
    return mm.text_encoder_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (images, latents) live: CPU unless ComfyUI runs with ``--gpu-only``."""
    mm = _model_management()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def low_vram() -> bool:
    """True in ComfyUI's low/no-VRAM modes (the rewriter's LLM, which ComfyUI does not manage, then leaves the GPU
    after each answer)."""
    mm = _model_management()
    if mm is None:
        return False
    return getattr(mm.vram_state, "name", "") in ("LOW_VRAM", "NO_VRAM")


def vae_dtype(device: torch.device) -> torch.dtype:
    """The VAE's dtype when the user picks ``auto``: ComfyUI's choice (bf16 where it is safe), else fp32."""
    mm = _model_management()
    return mm.vae_dtype(device) if mm is not None else torch.float32


def comfy_bert_vocab() -> str | None:
    """The BERT tokenizer folder ComfyUI ships for its native HunyuanDiT support (all-in-one files hold
    no vocabulary), or None outside ComfyUI."""
    comfy = sys.modules.get("comfy")  # a namespace package: no __init__.py, only __path__
    for root in getattr(comfy, "__path__", None) or []:
        folder = Path(root) / "text_encoders" / "hydit_clip_tokenizer"
        if (folder / "vocab.txt").is_file():
            return str(folder)
    return None


def free_memory(num_bytes: int, device: torch.device | None = None) -> None:
    """Make room for ``num_bytes`` on ``device`` before a large module loads.

    In ComfyUI this evicts other packs' and ComfyUI's own models; outside it only collects garbage.
    """
    device = device or torch_device()
    mm = _model_management()
    if mm is not None:
        mm.free_memory(num_bytes, device)
        mm.soft_empty_cache()
        return
    release_cached_memory(device)



# ------------------------------------------------------------------------ progress and interruption
def _previewer() -> Callable[[torch.Tensor], object] | None:
    """ComfyUI's latent previewer for SDXL-space latents (honours ``--preview-method``), or None."""
    try:
        import comfy.latent_formats
        import latent_preview
    except ImportError:
        return None
    previewer = latent_preview.get_previewer(torch_device(), comfy.latent_formats.SDXL())
    if previewer is None:
        return None
    return lambda latents: previewer.decode_latent_to_preview_image("JPEG", latents)


def progress_callback(total: int) -> Callable[[int, int, torch.Tensor | None], None]:
    """A ``progress(step, total, preview_latents)`` callable for the core's sampler.

    In ComfyUI it drives the node's progress bar (step count) and sends live previews of the scaled
    latents; the progress hook also checks for an interrupt. Outside ComfyUI it does nothing.
    """
    if not in_comfyui():
        return lambda step, total_steps, preview_latents=None: None
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)
    preview = _previewer()

    def progress(step: int, total_steps: int, preview_latents: torch.Tensor | None = None) -> None:
        image = None
        if preview is not None and preview_latents is not None:
            image = preview(preview_latents.detach().float())
        bar.update_absolute(step, total_steps, image)

    return progress


def request_interrupt() -> None:
    """Ask a running sampler to stop (outside ComfyUI; inside it, ComfyUI's own interrupt is used)."""
    mm = _model_management()
    if mm is not None:
        mm.interrupt_current_processing(True)
    else:
        _interrupt.set()


def cancel_callback() -> Callable[[], None]:
    """A ``cancel()`` callable that raises when the user interrupted the run, and clears the request."""
    mm = _model_management()
    if mm is not None:
        return mm.throw_exception_if_processing_interrupted

    def cancel() -> None:
        if _interrupt.is_set():
            _interrupt.clear()
            raise ProcessingInterrupted("processing interrupted")

    return cancel


def show_text(node_id: str | None, text: str, level: int = logging.WARNING) -> None:
    """Show ``text`` on a node in ComfyUI's UI (progress text) and log it; only logs outside ComfyUI."""
    logging.getLogger("hunyuan_dit").log(level, text)
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if node_id is not None and instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)


# ------------------------------------------------------------------------------------ model folders
def _models_root() -> Path | None:
    root = os.environ.get(MODELS_DIR_ENV)
    return Path(root).expanduser() if root else None


def user_directory() -> str | None:
    """ComfyUI's user folder (settings, saved state; ``--user-directory``), or None outside ComfyUI."""
    fp = _folder_paths()
    return fp.get_user_directory() if fp is not None else None


def register_model_folder(key: str, subdir: str) -> None:
    """Register a model folder key (e.g. ``hunyuan`` → ``models/hunyuan``) with ComfyUI or the fallback."""
    fp = _folder_paths()
    if fp is not None:
        fp.add_model_folder_path(key, os.path.join(fp.models_dir, subdir))
        return
    subdirs = _FALLBACK_SUBDIRS.setdefault(key, [])
    if subdir not in subdirs:
        subdirs.append(subdir)


def folder_paths_for(folder: str) -> list[str]:
    """Every directory searched for the folder key ``folder`` (existing or not), in priority order."""
    folder = _LEGACY_KEYS.get(folder, folder)
    fp = _folder_paths()
    if fp is not None:
        try:
            return list(fp.get_folder_paths(folder))
        except KeyError:
            return []
    root = _models_root()
    if root is None:
        return []
    return [str(root / sub) for sub in _FALLBACK_SUBDIRS.get(folder, [folder])]


def get_filename_list(folder: str) -> list[str]:
    """Weight files under a folder key, relative to their folder with '/' separators, sorted."""
    fp = _folder_paths()
    if fp is not None:
        try:
            return list(fp.get_filename_list(_LEGACY_KEYS.get(folder, folder)))
        except KeyError:
            return []
    names: set[str] = set()
    for base in map(Path, folder_paths_for(folder)):
        if base.is_dir():
            for path in base.rglob("*"):
                if path.is_file() and path.suffix.lower() in WEIGHT_EXTENSIONS:
                    names.add(path.relative_to(base).as_posix())
    return sorted(names)


def get_folder_list(folder: str) -> list[str]:
    """Model *folders* (official ``ckpts`` roots, diffusers folders) under a folder key, sorted.

    A sub-directory counts when it holds ``t2i/`` or ``model_index.json``; up to two levels are searched
    so that ``HunyuanDiT-v1.1/`` and ``HunyuanDiT/ckpts/`` are both found.
    """
    found: set[str] = set()
    for base in map(Path, folder_paths_for(folder)):
        if not base.is_dir():
            continue
        for child in sorted(p for p in base.iterdir() if p.is_dir()):
            candidates = [child] + sorted(p for p in child.iterdir() if p.is_dir())
            for path in candidates:
                if (path / "t2i").is_dir() or (path / "model_index.json").is_file():
                    found.add(path.relative_to(base).as_posix())
    return sorted(found)


def get_full_path(folder: str, name: str) -> str:
    """Absolute path of ``name`` (file or folder) under a folder key.

    Raises ModelFileError naming every folder searched when it is not there; absolute paths that exist
    are returned as they are (scripts may pass them).
    """
    if os.path.isabs(name) and os.path.exists(name):
        return name
    searched = folder_paths_for(folder)
    fp = _folder_paths()
    if fp is not None:
        found = fp.get_full_path(_LEGACY_KEYS.get(folder, folder), name)
        if found is not None:
            return found
    for base in searched:
        candidate = os.path.join(base, name)
        if os.path.exists(candidate):
            return candidate
    where = ", ".join(f"'{p}'" for p in searched) if searched else (
        f"no folders (set {MODELS_DIR_ENV} to a directory laid out like ComfyUI's models/)"
    )
    raise ModelFileError(f"'{name}' not found in the '{folder}' model folder; searched {where}")
