"""Detect which real layout a path holds, once, and read each part from that one description.

Layouts (one module each): :mod:`.official` tree, :mod:`.diffusers_folder`, ComfyUI :mod:`.all_in_one` file,
:mod:`.dit_only` file or folder. A single file is read while it is detected (safetensors memory-mapped: only
its checked header is parsed) and its content travels in the description, so no part opens it again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelFileError
from . import all_in_one, diffusers_folder, dit_only, official
from .files import (
    StateDict,
    read_checkpoint,
    read_folder_state_dict,
    reading,
    unwrap_state_dict,
)
from .model_files import ModelFiles
from .text_encoder_files import load_text_encoder_from_folders
from .vae_files import load_vae_from_folder, load_vae_from_state_dict


def find_model_files(path: str | os.PathLike, variant: str | None = None) -> ModelFiles:
    """Detect the layout at ``path`` and locate every part; ``variant`` picks an official weight file. Raise
    ModelFileError saying what was expected (also for a file or folder that cannot be read, and a weights file
    that is truncated or malformed)."""
    path = Path(path).expanduser()
    with reading(path, "model"):
        return _find_model_files(path, variant)


def _find_model_files(path: Path, variant: str | None) -> ModelFiles:
    if not path.exists():
        raise ModelFileError(f"model not found: '{path}' does not exist")
    if path.is_file():
        checkpoint = read_checkpoint(path, "model file")
        layout = "single-file" if isinstance(checkpoint, dict) and all_in_one.is_all_in_one(checkpoint) else "dit-only"
        return ModelFiles(layout, path, checkpoint=checkpoint)
    t2i = official.find_t2i(path)
    if t2i is not None:
        return official.locate(t2i, variant)
    if diffusers_folder.is_diffusers_folder(path):
        return diffusers_folder.locate(path)
    if diffusers_folder.is_transformer_folder(path):
        return ModelFiles("dit-only", path)
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:12]) or "an empty folder"
    raise ModelFileError(
        f"'{path}' is not a Hunyuan-DiT model folder: expected an official tree (ckpts/t2i/model/, "
        f"clip_text_encoder/, tokenizer/, mt5/, sdxl-vae-fp16-fix/), a diffusers folder (transformer/, "
        f"text_encoder/, text_encoder_2/, vae/, ...) or a single .safetensors file; found: {listing}"
    )


def require_whole_model(files: ModelFiles, needed: str) -> None:
    """Refuse a bare file or DiT folder where ``needed`` (e.g. "the text encoders") must come from a whole model,
    saying what the file really is."""
    if files.layout == "dit-only":
        raise ModelFileError(
            f"'{files.dit}' is {dit_only.describe(files.dit, files.checkpoint)}; {needed} come from a whole model: "
            "an official ckpts/t2i folder, a diffusers folder or a ComfyUI all-in-one .safetensors file (or load "
            "the parts with load_dit / load_text_encoder / load_vae)"
        )


def read_dit_weights(files: ModelFiles, variant: str | None = None) -> StateDict:
    """The DiT's tensors as stored (any naming); ``variant`` also picks a DeepSpeed container of a bare file."""
    where = f"DiT weights '{files.dit}'"
    if files.dit.is_dir():
        return read_folder_state_dict(files.dit, what="DiT weights")
    checkpoint = files.checkpoint if files.checkpoint is not None else read_checkpoint(files.dit, "DiT weights")
    if files.is_single_file:
        return all_in_one.dit_weights(checkpoint)
    return dit_only.dit_weights(checkpoint, variant or files.variant, where)


def read_text_encoder(files: ModelFiles, device: torch.device, dtype: torch.dtype, bert_vocab: str | os.PathLike | None = None):
    """BERT + mT5 with their tokenizers; ``bert_vocab`` for an all-in-one file (which carries none)."""
    if files.is_single_file:
        return all_in_one.load_text_encoder_from_single_file(files.checkpoint, bert_vocab, device, dtype)
    require_whole_model(files, "the text encoders (BERT + mT5)")
    te = files.text_encoder
    return load_text_encoder_from_folders(te.bert, te.bert_tokenizer, te.mt5, te.mt5_tokenizer, device, dtype)


def read_vae(files: ModelFiles, device: torch.device, dtype: torch.dtype):
    """The SDXL VAE: a model's VAE folder, an all-in-one file's ``vae.*``, or a bare VAE weights file."""
    if files.vae is not None:
        return load_vae_from_folder(files.vae, device, dtype)
    if files.dit.is_dir():
        require_whole_model(files, "the VAE")
    where = f"VAE weights '{files.dit}'"
    if files.is_single_file:
        part = all_in_one.vae_weights(files.checkpoint)
        if not part:
            raise ModelFileError(f"'{files.dit}' has no VAE weights (expected keys under '{all_in_one.VAE_PREFIX}')")
    else:
        part = unwrap_state_dict(files.checkpoint, ("state_dict",), where)
    return load_vae_from_state_dict(part, device, dtype)
