"""Turn whatever the user has on disk into ready modules: ``load_parts`` (any of DiT, text encoder, VAE from one
model), ``load_dit``, ``load_text_encoder``, ``load_vae``.

These are the public entry points of loading: device and dtype are resolved here, once, and passed inward as
``torch.device``/``torch.dtype``. The layout is detected once (:func:`formats.layouts.find_model_files`) and each
part is read from that one description, renamed to its model's names, and assigned into a module built on the
meta device, so it materialises exactly once, in its final dtype and device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError
from .formats.dit_source import dit_weights_file
from .formats.files import reading
from .formats.keys import to_official
from .formats.layouts import (
    find_model_files,
    read_dit_weights,
    read_text_encoder,
    read_vae,
    require_whole_model,
)
from .formats.model_files import ModelFiles
from .formats.official import VARIANTS
from .formats.vae_files import load_vae_from_folder, vae_folder_config
from .model.config import DiTConfig
from .model.dit import HunyuanDiT
from .model.fp8 import dequantise_scaled_fp8, resolve_weight_dtype, store_weights
from .model.materialise import build_with_weights
from .model.text_encoder import BilingualTextEncoder
from .settings.devices import resolve_device, resolve_dtype

PathLike = str | os.PathLike
PARTS = ("dit", "text_encoder", "vae")


@dataclass
class LoadedParts:
    """The parts :func:`load_parts` was asked for; the others are None."""

    dit: HunyuanDiT | None = None
    text_encoder: BilingualTextEncoder | None = None
    vae: object | None = None  # diffusers AutoencoderKL


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


def _check_variant(variant: str | None) -> None:
    if variant is not None and variant not in VARIANTS:
        raise InputError(f"variant must be one of {', '.join(VARIANTS)} (a weight choice) or None; got {variant!r}")


def _build_dit(sd: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype, where: str) -> HunyuanDiT:
    """A HunyuanDiT from weights in any accepted naming (ComfyUI's scaled fp8 files dequantised); the module
    keeps no copy of ``sd``."""
    sd = to_official(dequantise_scaled_fp8(sd))
    config = DiTConfig.from_state_dict(sd, where)
    return build_with_weights(lambda: HunyuanDiT(config), sd, device, dtype, where, warn_unexpected=True)


def _read_dit(files: ModelFiles, variant: str | None, device: torch.device, dtype: torch.dtype) -> HunyuanDiT:
    """The DiT of ``files``, remembering where its weights lie (a LoRA restore reads them again from there)."""
    dit = _build_dit(read_dit_weights(files, variant), device, dtype, f"'{files.dit}'")
    dit.weights_file = dit_weights_file(files, variant)
    return dit


@_reads_model("model")
def load_parts(
    path: PathLike,
    parts: Collection[str] = PARTS,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    vae_dtype: str | torch.dtype | None = None,
    variant: str | None = None,
    bert_vocab: PathLike | None = None,
    weight_dtype: str | torch.dtype | None = None,
) -> LoadedParts:
    """Load the requested ``parts`` (of ``dit``, ``text_encoder``, ``vae``) of one model in any layout, each in its
    final device and dtype (``vae_dtype`` defaults to ``dtype``); the layout is detected and each file read once.
    ``variant`` is a weight choice (ema, module, distill, merge); ``bert_vocab`` serves an all-in-one file;
    ``weight_dtype`` (``"fp8_e4m3fn"`` / ``"fp8_e5m2"``) stores the DiT's and mT5's block Linears in fp8."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise InputError(f"parts must be a non-empty selection of {', '.join(PARTS)}; got {sorted(parts)!r}")
    _check_variant(variant)
    resolve_weight_dtype(weight_dtype)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    vae_dtype = dtype if vae_dtype is None else resolve_dtype(vae_dtype, device)
    files = find_model_files(path, variant)
    if {"text_encoder", "vae"} & set(parts):
        require_whole_model(files, "a pipeline's text encoders and VAE")
    out = LoadedParts()
    if "dit" in parts:
        out.dit = _read_dit(files, variant, device, dtype)
    if "text_encoder" in parts:
        out.text_encoder = read_text_encoder(files, device, dtype, bert_vocab)
    if "vae" in parts:
        out.vae = read_vae(files, device, vae_dtype)
    store_weights(weight_dtype, out.dit, out.text_encoder)
    return out


@_reads_model("DiT")
def load_dit(path_or_state_dict: PathLike | Mapping[str, torch.Tensor], device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, variant: str | None = None,
             weight_dtype: str | torch.dtype | None = None) -> HunyuanDiT:
    """Load the DiT from any layout (official tree, diffusers folder, all-in-one file, DiT-only file) or a state
    dict; ``weight_dtype`` (``"fp8_e4m3fn"`` / ``"fp8_e5m2"``) stores its block Linears in fp8."""
    _check_variant(variant)
    resolve_weight_dtype(weight_dtype)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if isinstance(path_or_state_dict, Mapping):
        dit = _build_dit(path_or_state_dict, device, dtype, "state dict")
    else:
        dit = _read_dit(find_model_files(path_or_state_dict, variant), variant, device, dtype)
    store_weights(weight_dtype, dit=dit)
    return dit


@_reads_model("text encoder")
def load_text_encoder(path: PathLike, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                      bert_vocab: PathLike | None = None,
                      weight_dtype: str | torch.dtype | None = None) -> BilingualTextEncoder:
    """Load BERT + mT5 with their tokenizers from an official tree, a diffusers folder or an all-in-one file;
    ``weight_dtype`` (``"fp8_e4m3fn"`` / ``"fp8_e5m2"``) stores mT5's block Linears in fp8."""
    resolve_weight_dtype(weight_dtype)
    device = resolve_device(device)
    encoder = read_text_encoder(find_model_files(path), device, resolve_dtype(dtype, device), bert_vocab)
    store_weights(weight_dtype, text_encoder=encoder)
    return encoder


@_reads_model("VAE")
def load_vae(path: PathLike, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
    """Load the SDXL VAE from a model (any layout), a VAE folder, or a VAE weights file (LDM or diffusers names)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    folder = Path(path).expanduser()
    config = vae_folder_config(folder)
    if config is not None:
        return load_vae_from_folder(folder, device, dtype, config)
    return read_vae(find_model_files(folder), device, dtype)
