"""Write a model in any real layout: official ``ckpts`` tree, diffusers folder, ComfyUI all-in-one file.

Used to convert between layouts (``hunyuan-dit convert``) and by :mod:`hunyuan_core.tiny` to write test
models. The writers live with their layouts (:mod:`.official`, :mod:`.diffusers_folder`, :mod:`.all_in_one`);
each produces what the real releases contain, so the readers read them back unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, OutputError
from ..model.config import DiTConfig
from ..outputs import ensure_dir
from .all_in_one import bert_vocab_beside, write_comfy
from .diffusers_folder import write_diffusers
from .official import write_official

LAYOUTS = ("official", "diffusers", "comfy")


@dataclass
class ModelParts:
    """Every weight and setting of one model, in the names each writer starts from."""

    version: str
    dit: dict[str, torch.Tensor]  # official names
    dit_config: DiTConfig
    bert: dict[str, torch.Tensor]  # transformers BertModel names, no prefix
    bert_config: object  # transformers BertConfig
    mt5: dict[str, torch.Tensor]  # T5EncoderModel or full MT5ForConditionalGeneration names
    mt5_config: object  # transformers (M)T5Config
    vae: dict[str, torch.Tensor]  # diffusers AutoencoderKL names
    vae_config: dict
    vocab: list[str]  # BERT vocabulary, in id order
    spiece: bytes  # the mT5 sentencepiece model proto
    clip_extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other tensors of the official BERT file


def parts_from_pipeline(pipe) -> ModelParts:
    """Collect the parts of a loaded :class:`~hunyuan_core.pipeline.HunyuanDiTPipeline` (on CPU, as stored)."""
    te = pipe.text_encoder
    spiece = getattr(te.mt5_tokenizer, "spiece_model_proto", None)
    if not spiece:
        raise InputError("the mT5 tokenizer was loaded from tokenizer.json only; its sentencepiece model is needed to write")
    cpu = lambda m: {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}  # noqa: E731
    vocab = sorted(te.bert_tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return ModelParts(
        version=pipe.dit.config.version, dit=cpu(pipe.dit), dit_config=pipe.dit.config, bert=cpu(te.bert),
        bert_config=te.bert.config, mt5=cpu(te.mt5), mt5_config=te.mt5.config, vae=cpu(pipe.vae),
        vae_config=dict(pipe.vae.config), vocab=[tok for tok, _ in vocab], spiece=spiece,
    )


def _comfy_file(dest: Path, version: str) -> Path:
    return dest if dest.suffix == ".safetensors" else dest / f"hunyuan_dit_{version}.safetensors"


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_destination(dest: str | os.PathLike, layout: str, version: str | None = None,
                      overwrite: bool = False) -> None:
    """Refuse (OutputError) a destination whose files ``save_parts`` would replace, unless ``overwrite``.

    A folder layout needs an empty or new folder; comfy needs its ``.safetensors`` file and the tokenizer folder
    beside it to be new. Without ``version`` the comfy file name inside a folder is not known yet and only the
    rest is checked (the CLI calls this before loading the model, ``save_parts`` again with the version).
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    dest = Path(dest).expanduser()
    if layout == "comfy":
        if dest.suffix != ".safetensors" and dest.is_file():
            raise OutputError(f"output '{dest}' is a file; give a folder or a path ending in .safetensors")
        model = _comfy_file(dest, version or "<version>")
        taken = ([model] if version or dest.suffix == ".safetensors" else []) + [bert_vocab_beside(model).parent]
        found = [p for p in taken if p.is_file() or _holds_files(p)]
    else:
        if dest.is_file():
            raise OutputError(f"output '{dest}' is a file; the {layout} layout is written into a folder")
        found = [dest] if _holds_files(dest) else []
    if found and not overwrite:
        what = "is a folder that is not empty" if found[0].is_dir() else "already exists"
        raise OutputError(
            f"output '{found[0]}' {what}; not replacing it (pass --overwrite / overwrite=True, or choose a new path)"
        )


def save_parts(parts: ModelParts, dest: str | os.PathLike, layout: str, overwrite: bool = False) -> Path:
    """Write ``parts`` as ``layout`` and return the path to load: official -> ``dest/ckpts``, diffusers ->
    ``dest``, comfy -> ``dest`` itself when it ends in ``.safetensors``, else ``dest/hunyuan_dit_<v>.safetensors``.

    Every file is written under a temporary name and renamed into place; existing files are replaced only with
    ``overwrite`` (see :func:`check_destination`).
    """
    check_destination(dest, layout, parts.version, overwrite)
    dest = Path(dest).expanduser()
    if layout == "comfy":
        return write_comfy(_comfy_file(dest, parts.version), parts)
    ensure_dir(dest)
    return write_official(dest, parts) if layout == "official" else write_diffusers(dest, parts)


def save_pipeline(pipe, dest: str | os.PathLike, layout: str, overwrite: bool = False) -> Path:
    """Convert a loaded pipeline to another layout (see :func:`save_parts` for the returned path)."""
    return save_parts(parts_from_pipeline(pipe), dest, layout, overwrite)
