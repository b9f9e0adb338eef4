"""Turn whatever the user has on disk into ready modules: ``load_dit``, ``load_text_encoder``, ``load_vae``.

Weights are read once (safetensors memory-mapped), renamed to the official names, and assigned into a
module built on the meta device, so they materialise exactly once in the target dtype and device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .errors import ModelFileError
from .formats.files import (
    StateDict,
    read_checkpoint,
    read_folder_state_dict,
    read_json_object,
    reading,
    unwrap_state_dict,
)
from .formats.keys import to_official
from .formats.layouts import (
    DIT_CONTAINERS,
    SINGLE_FILE_TEXT_PREFIX,
    SINGLE_FILE_VAE_PREFIX,
    ModelFiles,
    find_model_files,
    require_whole_model,
)
from .model.config import DiTConfig
from .model.dit import HunyuanDiT
from .model.materialise import build_with_weights
from .model.versions import detect_version
from .settings.devices import resolve_device, resolve_dtype

PathLike = str | os.PathLike


def _reads_model(what: str) -> Callable[[Callable], Callable]:
    """For the public loaders: an OS error anywhere while reading the model (a file or folder that cannot be
    read, e.g. permission denied) becomes a ModelFileError naming that file, never a raw PermissionError."""
    def decorate(load: Callable) -> Callable:
        @functools.wraps(load)
        def wrapper(path, *args, **kwargs):
            with reading(path if isinstance(path, (str, os.PathLike)) else "state dict", what):
                return load(path, *args, **kwargs)
        return wrapper
    return decorate


def _container_order(variant: str | None) -> tuple[str, ...]:
    # DeepSpeed saves {"module": ..., "ema": ...}; the requested variant wins, EMA otherwise.
    order = list(DIT_CONTAINERS)
    if variant in order:
        order.remove(variant)
        order.insert(0, variant)
    return tuple(order)


def build_dit(sd: Mapping[str, torch.Tensor], device=None, dtype=None, where: str = "state dict") -> HunyuanDiT:
    """Build a HunyuanDiT from weights in any accepted naming; the module keeps no copy of ``sd``."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    sd = to_official(sd)
    config = DiTConfig.from_state_dict(sd, where)
    dit = build_with_weights(lambda: HunyuanDiT(config), sd, device, dtype, where, warn_unexpected=True)
    dit.version = detect_version(config)
    return dit


def _single_file_part(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _read_dit_weights(files: ModelFiles) -> StateDict:
    if files.dit.is_dir():
        return read_folder_state_dict(files.dit, what="DiT weights")
    return unwrap_state_dict(read_checkpoint(files.dit, "DiT weights"), _container_order(files.variant), f"DiT weights '{files.dit}'")


@_reads_model("DiT")
def load_dit(path_or_state_dict: PathLike | Mapping[str, torch.Tensor], device=None, dtype=None, variant: str | None = None) -> HunyuanDiT:
    """Load the DiT from any layout (official tree, diffusers folder, all-in-one file, DiT-only file) or a state dict."""
    if isinstance(path_or_state_dict, Mapping):
        return build_dit(path_or_state_dict, device, dtype)
    files = find_model_files(path_or_state_dict, variant)
    if variant is not None and files.layout != "official":
        files.variant = variant
    return build_dit(_read_dit_weights(files), device, dtype, where=f"'{files.dit}'")


@_reads_model("text encoder")
def load_text_encoder(path: PathLike, device=None, dtype=None, bert_vocab: PathLike | None = None):
    """Load BERT + mT5 with their tokenizers from an official tree, a diffusers folder or an all-in-one file."""
    from .model.text_encoder import (
        load_text_encoder_from_folders,
        load_text_encoder_from_single_file,
    )

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    files = find_model_files(path)
    if files.is_single_file:
        _, text, _ = split_single_file(files.dit)
        return load_text_encoder_from_single_file(text, bert_vocab=bert_vocab, device=device, dtype=dtype)
    require_whole_model(files, "the text encoders (BERT + mT5)")
    te = files.text_encoder
    return load_text_encoder_from_folders(te.bert, te.bert_tokenizer, te.mt5, te.mt5_tokenizer, device=device, dtype=dtype)


def _is_vae_folder(path: Path) -> bool:
    cfg = path / "config.json"
    return cfg.is_file() and read_json_object(cfg, "model config").get("_class_name") == "AutoencoderKL"


@_reads_model("VAE")
def load_vae(path: PathLike, device=None, dtype=None):
    """Load the SDXL VAE from a model (any layout), a VAE folder, or a VAE weights file (LDM or diffusers names)."""
    from .model.vae import load_vae_from_folder, load_vae_from_ldm_state_dict

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    p = Path(path).expanduser()
    if p.is_dir() and _is_vae_folder(p):
        return load_vae_from_folder(p, device=device, dtype=dtype)
    files = find_model_files(p)
    if files.vae is not None:
        return load_vae_from_folder(files.vae, device=device, dtype=dtype)
    sd = unwrap_state_dict(read_checkpoint(files.dit, "VAE weights"), ("state_dict",), f"VAE weights '{files.dit}'")
    part = _single_file_part(sd, SINGLE_FILE_VAE_PREFIX) if files.is_single_file else sd
    if not part:
        raise ModelFileError(f"'{files.dit}' has no VAE weights (expected keys under '{SINGLE_FILE_VAE_PREFIX}')")
    if any(".up_blocks." in k for k in part):  # diffusers names in a bare file: bring them to LDM names
        from .formats.convert import vae_to_ldm

        levels = len({k.split(".")[2] for k in part if k.startswith("encoder.down_blocks.")})
        part = vae_to_ldm(part, levels)
    return load_vae_from_ldm_state_dict(part, device=device, dtype=dtype)


def split_single_file(path: Path) -> tuple[StateDict, StateDict, StateDict]:
    """Read an all-in-one file once; return its (DiT, text-encoder, VAE) parts."""
    sd = read_checkpoint(path, "all-in-one checkpoint")
    text = {k: v for k, v in sd.items() if k.startswith(SINGLE_FILE_TEXT_PREFIX)}
    vae = _single_file_part(sd, SINGLE_FILE_VAE_PREFIX)
    dit = {k: v for k, v in sd.items() if not k.startswith((SINGLE_FILE_TEXT_PREFIX, SINGLE_FILE_VAE_PREFIX))}
    return dit, text, vae
