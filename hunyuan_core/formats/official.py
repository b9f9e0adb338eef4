"""The official release tree: ``ckpts/t2i/{model/pytorch_model_<variant>.pt, clip_text_encoder/, tokenizer/, mt5/,
sdxl-vae-fp16-fix/}`` (the path given may be ``ckpts``, ``ckpts/t2i`` or their parent). The DiT files are
DeepSpeed pickles in official key names, one per weight variant; the rest are transformers/diffusers folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelFileError
from .model_files import ModelFiles, TextEncoderFiles
from .writing import (
    save_pickle,
    save_safetensors,
    transformers_config_json,
    vae_config_json,
    write_bert_tokenizer,
    write_json,
    write_mt5_tokenizer,
)

if TYPE_CHECKING:
    from .convert import ModelParts

VARIANTS = ("ema", "module", "distill", "merge")  # official weight files, in default order


def find_t2i(path: Path) -> Path | None:
    """The ``t2i`` folder of an official tree at or below ``path``, or None."""
    for cand in (path, path / "t2i", path / "ckpts" / "t2i"):
        if (cand / "model").is_dir() and (cand / "clip_text_encoder").is_dir():
            return cand
    return None


def _weight_files(model_dir: Path) -> dict[str, Path]:
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
    return found


def locate(t2i: Path, variant: str | None) -> ModelFiles:
    """Every part of the tree at ``t2i``; ``variant`` picks the DiT weight file (the first of VARIANTS found)."""
    found = _weight_files(t2i / "model")
    chosen = variant if variant is not None else next(iter(found))
    if chosen not in found:
        raise ModelFileError(f"weight variant '{chosen}' not found in '{t2i / 'model'}': available: {', '.join(found)}")
    return ModelFiles(
        "official", found[chosen], chosen, found,
        TextEncoderFiles(t2i / "clip_text_encoder", t2i / "tokenizer", t2i / "mt5", t2i / "mt5"),
        vae=t2i / "sdxl-vae-fp16-fix",
    )


def write_official(root: Path, p: ModelParts, variant: str = "ema") -> Path:
    """``root/ckpts/t2i/{model, clip_text_encoder, tokenizer, mt5, sdxl-vae-fp16-fix}``; returns ``root/ckpts``."""
    t2i = root / "ckpts" / "t2i"
    save_pickle(p.dit, t2i / "model" / f"pytorch_model_{variant}.pt")
    clip = {f"bert.{k}": v for k, v in p.bert.items()} | p.clip_extra
    save_pickle(clip, t2i / "clip_text_encoder" / "pytorch_model.bin")
    write_json(t2i / "clip_text_encoder" / "config.json", transformers_config_json(p.bert_config))
    write_bert_tokenizer(t2i / "tokenizer", p.vocab)
    save_pickle(p.mt5, t2i / "mt5" / "pytorch_model.bin")
    write_json(t2i / "mt5" / "config.json", transformers_config_json(p.mt5_config))
    write_mt5_tokenizer(t2i / "mt5", p.spiece)
    write_json(t2i / "sdxl-vae-fp16-fix" / "config.json", vae_config_json(p.vae_config))
    save_safetensors(p.vae, t2i / "sdxl-vae-fp16-fix" / "diffusion_pytorch_model.safetensors")
    return root / "ckpts"
