"""Where each part of a Hunyuan-DiT model lives, for every real file layout users download.

- official tree: ``ckpts/t2i/{model/pytorch_model_<variant>.pt, clip_text_encoder/, tokenizer/, mt5/,
  sdxl-vae-fp16-fix/}`` (the path may be ``ckpts``, ``ckpts/t2i`` or their parent);
- diffusers folder: ``transformer/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, vae/, scheduler/``;
- ComfyUI all-in-one ``.safetensors``: DiT + ``vae.*`` + ``text_encoders.*`` in one file;
- DiT-only file (``.safetensors``/``.pt``/``.bin``/``.ckpt``) or a diffusers ``transformer/`` folder alone.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .files import sniff_format

VARIANTS = ("ema", "module", "distill", "merge")  # official weight files, in default order
SINGLE_FILE_TEXT_PREFIX = "text_encoders."
SINGLE_FILE_VAE_PREFIX = "vae."


@dataclass
class TextEncoderFiles:
    """Folders of the BERT and mT5 encoders and their tokenizers."""

    bert: Path
    bert_tokenizer: Path
    mt5: Path
    mt5_tokenizer: Path


@dataclass
class ModelFiles:
    """The parts of one model on disk. ``layout`` is official | diffusers | single-file | dit-only."""

    layout: str
    root: Path
    dit: Path  # a weights file, or a diffusers transformer folder
    variant: str | None = None
    variants: dict[str, Path] = field(default_factory=dict)
    text_encoder: TextEncoderFiles | None = None
    vae: Path | None = None  # a diffusers-style VAE folder
    scheduler_config: Path | None = None

    @property
    def is_single_file(self) -> bool:
        return self.layout == "single-file"


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file, from its header only (no weights read)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return [k for k in header if k != "__metadata__"]


def _official_t2i(path: Path) -> Path | None:
    for cand in (path, path / "t2i", path / "ckpts" / "t2i"):
        if (cand / "model").is_dir() and (cand / "clip_text_encoder").is_dir():
            return cand
    return None


def _pick_variant(model_dir: Path, variant: str | None) -> tuple[str, Path, dict[str, Path]]:
    found: dict[str, Path] = {}
    for v in VARIANTS:
        for ext in (".pt", ".safetensors", ".bin"):
            p = model_dir / f"pytorch_model_{v}{ext}"
            if p.is_file() and v not in found:
                found[v] = p
    if not found:
        raise ModelFileError(
            f"official model folder '{model_dir}' has no DiT weights: expected pytorch_model_<variant>.pt with "
            f"variant one of {', '.join(VARIANTS)}; found: {', '.join(sorted(p.name for p in model_dir.iterdir())) or 'nothing'}"
        )
    if variant is None:
        variant = next(iter(found))
    if variant not in found:
        raise ModelFileError(
            f"weight variant '{variant}' not found in '{model_dir}': available: {', '.join(found)}"
        )
    return variant, found[variant], found


def _diffusers_weights_present(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")))


def find_model_files(path: str | os.PathLike, variant: str | None = None) -> ModelFiles:
    """Detect the layout at ``path`` and locate every part; raise ModelFileError saying what was expected."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(f"model not found: '{path}' does not exist")
    if path.is_file():
        if sniff_format(path) == "safetensors" and any(
            k.startswith(SINGLE_FILE_TEXT_PREFIX) for k in safetensors_keys(path)
        ):
            return ModelFiles("single-file", path.parent, path)
        return ModelFiles("dit-only", path.parent, path)

    t2i = _official_t2i(path)
    if t2i is not None:
        variant, dit, variants = _pick_variant(t2i / "model", variant)
        return ModelFiles(
            "official", t2i, dit, variant, variants,
            TextEncoderFiles(t2i / "clip_text_encoder", t2i / "tokenizer", t2i / "mt5", t2i / "mt5"),
            vae=t2i / "sdxl-vae-fp16-fix",
        )
    if (path / "transformer").is_dir():
        return ModelFiles(
            "diffusers", path, path / "transformer",
            text_encoder=TextEncoderFiles(
                path / "text_encoder", path / "tokenizer", path / "text_encoder_2", path / "tokenizer_2"
            ),
            vae=path / "vae",
            scheduler_config=path / "scheduler" / "scheduler_config.json",
        )
    if (path / "config.json").is_file() and _diffusers_weights_present(path):
        return ModelFiles("dit-only", path, path)
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:12]) or "an empty folder"
    raise ModelFileError(
        f"'{path}' is not a Hunyuan-DiT model folder: expected an official tree (ckpts/t2i/model/, "
        f"clip_text_encoder/, tokenizer/, mt5/, sdxl-vae-fp16-fix/), a diffusers folder (transformer/, "
        f"text_encoder/, text_encoder_2/, vae/, ...) or a single .safetensors file; found: {listing}"
    )
