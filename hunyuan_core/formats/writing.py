"""What every layout writer shares: safe file writes (temporary name, then rename), tokenizer folders, configs."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from ..outputs import atomic_path, write_bytes, write_text
from .files import StateDict
from .text_encoder_files import BERT_TOKENIZER_CONFIG, MT5_TOKENIZER_CONFIG


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_safetensors(sd: Mapping[str, torch.Tensor], path: Path, overwrite: bool = True) -> None:
    from safetensors.torch import save_file

    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})


def save_pickle(sd: Mapping[str, torch.Tensor] | dict, path: Path, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(OrderedDict(sd), tmp)


def mt5_encoder_weights(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """The encoder half, stored as transformers saves a T5EncoderModel (tied embedding once, as ``shared``)."""
    return {k: v for k, v in sd.items()
            if k == "shared.weight" or (k.startswith("encoder.") and k != "encoder.embed_tokens.weight")}


def write_bert_tokenizer(folder: Path, vocab: list[str]) -> None:
    write_text(folder / "vocab.txt", "\n".join(vocab) + "\n")
    config = dict(BERT_TOKENIZER_CONFIG, tokenize_chinese_chars=True)
    write_json(folder / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})
    write_json(folder / "tokenizer_config.json", config)


def write_mt5_tokenizer(folder: Path, spiece: bytes) -> None:
    write_bytes(folder / "spiece.model", spiece)
    config = dict(MT5_TOKENIZER_CONFIG, legacy=True)
    write_json(folder / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})
    write_json(folder / "tokenizer_config.json", config)


def vae_config_json(vae_config: Mapping) -> dict:
    """A diffusers ``vae/config.json`` for an AutoencoderKL configuration."""
    import diffusers

    cfg = {k: v for k, v in vae_config.items() if not k.startswith("_")}
    return {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **cfg}


def transformers_config_json(config) -> dict:
    """A transformers config as ``save_pretrained`` writes it, without the fields that name this machine."""
    return {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
