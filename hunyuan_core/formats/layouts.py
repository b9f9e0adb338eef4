"""Where each part of a Hunyuan-DiT model lives, for every real file layout users download.

- official tree: ``ckpts/t2i/{model/pytorch_model_<variant>.pt, clip_text_encoder/, tokenizer/, mt5/,
  sdxl-vae-fp16-fix/}`` (the path may be ``ckpts``, ``ckpts/t2i`` or their parent);
- diffusers folder: ``transformer/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, vae/, scheduler/``;
- ComfyUI all-in-one ``.safetensors``: DiT + ``vae.*`` + ``text_encoders.*`` in one file;
- DiT-only file (``.safetensors``/``.pt``/``.bin``/``.ckpt``) or a diffusers ``transformer/`` folder alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError
from .files import read_checkpoint, read_safetensors_header, reading, sniff_format, unwrap_state_dict
from .kinds import DIT, describe_weights

VARIANTS = ("ema", "module", "distill", "merge")  # official weight files, in default order
DIT_CONTAINERS = ("ema", "module", "state_dict", "model")  # keys wrapping a DiT's weights in a .pt, EMA first
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


def safetensors_keys(path: Path, what: str = "model file") -> list[str]:
    """Tensor names of a safetensors file, from its checked header only (no weights read)."""
    return list(read_safetensors_header(path, what).tensors)


def describe_file(path: Path) -> str:
    """What a bare weights file (or folder) given as a model holds, as a noun phrase for errors: "a DiT-only
    file", "a VAE (SD/SDXL autoencoder)", ... Reading it first means a truncated or corrupt file is reported
    as such (ModelFileError) before anything is said about its kind."""
    if path.is_dir():
        return "a DiT-only folder (a diffusers transformer/)"
    if sniff_format(path) == "safetensors":
        keys = safetensors_keys(path)
    else:
        keys = list(unwrap_state_dict(read_checkpoint(path), DIT_CONTAINERS, f"'{path}'"))
    kind = describe_weights(keys)
    if kind == DIT:
        return "a DiT-only file"
    return kind or f"a file of {len(keys)} tensors that match no known model (first: {', '.join(keys[:3])})"


def require_whole_model(files: ModelFiles, needed: str) -> None:
    """Refuse a bare file or DiT folder where ``needed`` (e.g. "the text encoders") must come from a whole model,
    saying what the file really is."""
    if files.layout == "dit-only":
        raise ModelFileError(
            f"'{files.dit}' is {describe_file(files.dit)}; {needed} come from a whole model: an official ckpts/t2i "
            "folder, a diffusers folder or a ComfyUI all-in-one .safetensors file (or load the parts with "
            "load_dit / load_text_encoder / load_vae)"
        )


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
    """Detect the layout at ``path`` and locate every part; raise ModelFileError saying what was expected
    (also for a file or folder that cannot be read, and a safetensors file that is truncated or malformed)."""
    path = Path(path).expanduser()
    with reading(path, "model"):
        return _find_model_files(path, variant)


def _find_model_files(path: Path, variant: str | None) -> ModelFiles:
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
