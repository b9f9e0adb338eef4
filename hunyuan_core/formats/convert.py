"""Write a model in any real layout: official ``ckpts`` tree, diffusers folder, ComfyUI all-in-one file.

Used to convert between layouts (``hunyuan-dit convert``) and by :mod:`hunyuan_core.tiny` to write test
models. Each writer produces what the real releases contain, so the loaders read them back unchanged.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, OutputError
from ..model.config import DiTConfig
from ..model.text_encoder import (
    _BERT_TOKENIZER_CONFIG,
    _MT5_TOKENIZER_CONFIG,
    SINGLE_FILE_BERT_PREFIX,
    SINGLE_FILE_MT5_PREFIX,
    SINGLE_FILE_SPIECE_KEY,
)
from ..model.versions import VERSION_DEFAULTS
from ..outputs import atomic_path, ensure_dir, write_bytes, write_text
from .keys import official_to_diffusers

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
        version=pipe.version, dit=cpu(pipe.dit), dit_config=pipe.dit.config, bert=cpu(te.bert),
        bert_config=te.bert.config, mt5=cpu(te.mt5), mt5_config=te.mt5.config, vae=cpu(pipe.vae),
        vae_config=dict(pipe.vae.config), vocab=[tok for tok, _ in vocab], spiece=spiece,
    )


def mt5_encoder_weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder half, stored as transformers saves a T5EncoderModel (tied embedding once, as ``shared``)."""
    return {k: v for k, v in sd.items()
            if k == "shared.weight" or (k.startswith("encoder.") and k != "encoder.embed_tokens.weight")}


def vae_to_ldm(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL names -> original LDM names (as SDXL's ``sdxl_vae.safetensors``)."""
    rules = [
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"encoder.down.{m[1]}.block.{m[2]}."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"encoder.down.{m[1]}.downsample."),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}."),
        (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", lambda m: f"{m[1]}.mid.attn_1."),
        (r"^(encoder|decoder)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out."),
    ]
    attn_names = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for key, t in sd.items():
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        if ".mid.attn_1." in new:
            head, tail = new.split(".mid.attn_1.")
            tail = next((v + tail[len(k):] for k, v in attn_names.items() if tail.startswith(k)), tail)
            new = f"{head}.mid.attn_1.{tail}"
            if t.ndim == 2:  # LDM attention projections are 1x1 convolutions
                t = t[:, :, None, None]
        out[new.replace("conv_shortcut", "nin_shortcut")] = t
    return out


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})


def _save_pickle(sd: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(OrderedDict(sd), tmp)


def _write_bert_tokenizer(folder: Path, vocab: list[str]) -> None:
    write_text(folder / "vocab.txt", "\n".join(vocab) + "\n")
    config = dict(_BERT_TOKENIZER_CONFIG, tokenize_chinese_chars=True)
    _write_json(folder / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})
    _write_json(folder / "tokenizer_config.json", config)


def _write_mt5_tokenizer(folder: Path, spiece: bytes) -> None:
    write_bytes(folder / "spiece.model", spiece)
    config = dict(_MT5_TOKENIZER_CONFIG, legacy=True)
    _write_json(folder / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})
    _write_json(folder / "tokenizer_config.json", config)


def _vae_config(p: ModelParts) -> dict:
    import diffusers

    cfg = {k: v for k, v in p.vae_config.items() if not k.startswith("_")}
    return {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **cfg}


def _config_dict(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}


def write_official(root: Path, p: ModelParts, variant: str = "ema") -> Path:
    """``root/ckpts/t2i/{model, clip_text_encoder, tokenizer, mt5, sdxl-vae-fp16-fix}``; returns ``root/ckpts``."""
    t2i = root / "ckpts" / "t2i"
    _save_pickle(p.dit, t2i / "model" / f"pytorch_model_{variant}.pt")
    clip = {f"bert.{k}": v for k, v in p.bert.items()} | p.clip_extra
    _save_pickle(clip, t2i / "clip_text_encoder" / "pytorch_model.bin")
    _write_json(t2i / "clip_text_encoder" / "config.json", _config_dict(p.bert_config))
    _write_bert_tokenizer(t2i / "tokenizer", p.vocab)
    _save_pickle(p.mt5, t2i / "mt5" / "pytorch_model.bin")
    _write_json(t2i / "mt5" / "config.json", _config_dict(p.mt5_config))
    _write_mt5_tokenizer(t2i / "mt5", p.spiece)
    _write_json(t2i / "sdxl-vae-fp16-fix" / "config.json", _vae_config(p))
    _save_safetensors(p.vae, t2i / "sdxl-vae-fp16-fix" / "diffusion_pytorch_model.safetensors")
    return root / "ckpts"


def write_diffusers(folder: Path, p: ModelParts) -> Path:
    """A diffusers ``HunyuanDiTPipeline`` folder (loads with ``HunyuanDiTPipeline.from_pretrained``)."""
    import diffusers
    from transformers import T5Config

    c = p.dit_config
    _write_json(folder / "model_index.json", {
        "_class_name": "HunyuanDiTPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "BertModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "BertTokenizer"],
        "tokenizer_2": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "HunyuanDiT2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    _write_json(folder / "transformer" / "config.json", {
        "_class_name": "HunyuanDiT2DModel", "_diffusers_version": diffusers.__version__,
        "num_attention_heads": c.num_heads, "attention_head_dim": c.head_dim, "in_channels": c.in_channels,
        "patch_size": c.patch_size, "activation_fn": "gelu-approximate", "sample_size": 128,
        "hidden_size": c.hidden_size, "num_layers": c.depth, "mlp_ratio": c.mlp_hidden / c.hidden_size,
        "learn_sigma": c.learn_sigma, "cross_attention_dim": c.text_dim, "norm_type": "layer_norm",
        "cross_attention_dim_t5": c.t5_dim, "pooled_projection_dim": c.pooled_dim, "text_len": c.text_len,
        "text_len_t5": c.t5_len, "use_style_cond_and_image_meta_size": c.size_cond,
    })
    _save_safetensors(official_to_diffusers(p.dit), folder / "transformer" / "diffusion_pytorch_model.safetensors")
    _write_json(folder / "text_encoder" / "config.json", _config_dict(p.bert_config))
    _save_safetensors(p.bert, folder / "text_encoder" / "model.safetensors")
    _write_bert_tokenizer(folder / "tokenizer", p.vocab)
    # text_encoder_2: a T5EncoderModel in two shards, like the real 2-shard mT5 encoder.
    t5 = {k: v for k, v in _config_dict(p.mt5_config).items() if k not in ("model_type", "architectures")}
    t5_config = T5Config(**t5)
    t5_config.architectures = ["T5EncoderModel"]
    t5_config.is_encoder_decoder = False
    _write_json(folder / "text_encoder_2" / "config.json", t5_config.to_dict())
    enc = mt5_encoder_weights(p.mt5)
    names = list(enc)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        _save_safetensors({k: enc[k] for k in keys}, folder / "text_encoder_2" / shard)
    _write_json(folder / "text_encoder_2" / "model.safetensors.index.json", {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in enc.values())},
        "weight_map": {k: shard for shard, keys in shards.items() for k in keys},
    })
    _write_mt5_tokenizer(folder / "tokenizer_2", p.spiece)
    _write_json(folder / "vae" / "config.json", _vae_config(p))
    _save_safetensors(p.vae, folder / "vae" / "diffusion_pytorch_model.safetensors")
    d = VERSION_DEFAULTS[p.version]
    _write_json(folder / "scheduler" / "scheduler_config.json", {
        "_class_name": "DDPMScheduler", "_diffusers_version": diffusers.__version__,
        "beta_start": d.beta_start, "beta_end": d.beta_end, "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction", "num_train_timesteps": 1000, "clip_sample": False,
        "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
        "variance_type": "fixed_small", "trained_betas": None, "rescale_betas_zero_snr": False,
    })
    return folder


def bert_vocab_beside(path: str | os.PathLike) -> Path:
    """The BERT vocab.txt that :func:`write_comfy` writes next to an all-in-one file (the file itself, like
    the real one, carries no BERT vocabulary; ComfyUI ships it as ``hydit_clip_tokenizer/``)."""
    return Path(path).parent / "hydit_clip_tokenizer" / "vocab.txt"


def write_comfy(path: Path, p: ModelParts) -> Path:
    """A ComfyUI all-in-one ``.safetensors`` (fp16, like ``hunyuan_dit_1.2.safetensors``) + its BERT vocab beside."""
    import numpy as np

    levels = len(p.vae_config["block_out_channels"])
    sd: dict[str, torch.Tensor] = {f"model.diffusion_model.{k}": v for k, v in p.dit.items()}
    sd.update({f"vae.{k}": v for k, v in vae_to_ldm(p.vae, levels).items()})
    sd.update({f"{SINGLE_FILE_BERT_PREFIX}bert.{k}": v for k, v in p.bert.items()})
    sd.update({f"{SINGLE_FILE_MT5_PREFIX}{k}": v for k, v in mt5_encoder_weights(p.mt5).items()})
    sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    sd[SINGLE_FILE_SPIECE_KEY] = torch.from_numpy(np.frombuffer(p.spiece, dtype=np.uint8).copy())
    _save_safetensors(sd, path)
    _write_bert_tokenizer(bert_vocab_beside(path).parent, p.vocab)
    return path


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
