"""The ComfyUI all-in-one file (``hunyuan_dit_1.2.safetensors``, reference/comfyui-host.md §4.3): the DiT under
``model.diffusion_model.``, the SDXL VAE in LDM names under ``vae.``, BERT under ``text_encoders.hydit_clip.``
and mT5's encoder under ``text_encoders.mt5xl.`` with its sentencepiece model embedded as a uint8 tensor. The
file carries no BERT vocabulary (ComfyUI ships it as ``hydit_clip_tokenizer/``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ModelFileError
from ..model.text_encoder import BilingualTextEncoder
from .files import StateDict
from .keys import strip_prefix
from .text_encoder_files import CPU, mt5_tokenizer_from_bytes, text_encoder_from_weights
from .writing import mt5_encoder_weights, save_safetensors, write_bert_tokenizer

if TYPE_CHECKING:
    from .convert import ModelParts

DIT_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
TEXT_PREFIX = "text_encoders."
BERT_PREFIX = "text_encoders.hydit_clip.transformer."
MT5_PREFIX = "text_encoders.mt5xl.transformer."
SPIECE_KEY = "text_encoders.mt5xl.spiece_model"
BERT_TOKENIZER_FOLDER = "hydit_clip_tokenizer"


def is_all_in_one(keys: Mapping[str, object]) -> bool:
    """True for the keys of an all-in-one file (text encoders stored beside the DiT)."""
    return any(k.startswith(TEXT_PREFIX) for k in keys)


def dit_weights(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Everything that is neither VAE nor text encoder (the DiT, prefix left for :func:`keys.to_official`)."""
    return {k: v for k, v in sd.items() if not k.startswith((TEXT_PREFIX, VAE_PREFIX))}


def vae_weights(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """The VAE in LDM names, ``vae.`` stripped."""
    return strip_prefix(sd, VAE_PREFIX)


def load_text_encoder_from_single_file(
    sd: Mapping[str, torch.Tensor],
    bert_vocab: str | os.PathLike | None = None,
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
) -> BilingualTextEncoder:
    """BERT + mT5 from an all-in-one state dict (``text_encoders.hydit_clip.*``, ``text_encoders.mt5xl.*``).

    The file embeds the mT5 sentencepiece model but not the BERT vocabulary: pass ``bert_vocab``
    (a vocab.txt, or a tokenizer folder such as the official ``ckpts/t2i/tokenizer`` or ComfyUI's
    ``comfy/text_encoders/hydit_clip_tokenizer``).
    """
    bert_sd, t5_sd = strip_prefix(sd, BERT_PREFIX), strip_prefix(sd, MT5_PREFIX)
    for name, part, prefix, probe in (
        ("BERT", bert_sd, BERT_PREFIX, "bert.embeddings.word_embeddings.weight"),
        ("mT5", t5_sd, MT5_PREFIX, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    ):
        if probe not in part and probe.removeprefix("bert.") not in part:
            raise ModelFileError(
                f"all-in-one checkpoint: no {name} text encoder: expected '{prefix}{probe}'; the file has "
                f"{len(sd)} tensors starting with: {', '.join(list(sd)[:4]) or 'none'}"
            )
    if SPIECE_KEY not in sd:
        raise ModelFileError(f"all-in-one checkpoint: no mT5 tokenizer: expected the uint8 tensor '{SPIECE_KEY}'")
    if bert_vocab is None:
        raise ModelFileError(
            f"all-in-one checkpoint: the file carries no BERT vocabulary and there is no '{BERT_TOKENIZER_FOLDER}/' "
            "folder beside it; pass --bert-vocab / bert_vocab= a vocab.txt or a BERT tokenizer folder (the official "
            f"ckpts/t2i/tokenizer, or ComfyUI's comfy/text_encoders/{BERT_TOKENIZER_FOLDER})"
        )
    spiece = sd[SPIECE_KEY]
    if spiece.dtype != torch.uint8 or spiece.ndim != 1:
        raise ModelFileError(f"all-in-one checkpoint: '{SPIECE_KEY}' is a {spiece.dtype} tensor of shape "
                             f"{list(spiece.shape)}; expected the bytes of mT5's spiece.model as a 1-D uint8 tensor")
    mt5_tok = mt5_tokenizer_from_bytes(spiece.cpu().numpy().tobytes(), f"all-in-one checkpoint: the tensor '{SPIECE_KEY}'")
    return text_encoder_from_weights(bert_sd, t5_sd, mt5_tok, bert_vocab, device, dtype, where="all-in-one")


# ------------------------------------------------------------------------------------------------ writing


def vae_to_ldm(sd: Mapping[str, torch.Tensor], levels: int) -> StateDict:
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


def bert_vocab_beside(path: str | os.PathLike) -> Path:
    """The BERT vocab.txt that :func:`write_comfy` writes next to an all-in-one file (the file itself, like
    the real one, carries no BERT vocabulary; ComfyUI ships it as ``hydit_clip_tokenizer/``)."""
    return Path(path).parent / BERT_TOKENIZER_FOLDER / "vocab.txt"


def write_comfy(path: Path, p: ModelParts) -> Path:
    """A ComfyUI all-in-one ``.safetensors`` (fp16, like ``hunyuan_dit_1.2.safetensors``) + its BERT vocab beside."""
    import numpy as np

    levels = len(p.vae_config["block_out_channels"])
    sd: StateDict = {f"{DIT_PREFIX}{k}": v for k, v in p.dit.items()}
    sd.update({f"{VAE_PREFIX}{k}": v for k, v in vae_to_ldm(p.vae, levels).items()})
    sd.update({f"{BERT_PREFIX}bert.{k}": v for k, v in p.bert.items()})
    sd.update({f"{MT5_PREFIX}{k}": v for k, v in mt5_encoder_weights(p.mt5).items()})
    sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    sd[SPIECE_KEY] = torch.from_numpy(np.frombuffer(p.spiece, dtype=np.uint8).copy())
    save_safetensors(sd, path)
    write_bert_tokenizer(bert_vocab_beside(path).parent, p.vocab)
    return path
