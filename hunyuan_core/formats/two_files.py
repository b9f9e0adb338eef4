"""Two separate text encoder files, as users copy them into ComfyUI's ``models/text_encoders/``: the BERT weights
(official ``clip_text_encoder/pytorch_model.bin``) and the mT5 weights (official ``mt5/pytorch_model.bin`` or an
encoder-only mT5-XL file) with mT5's ``spiece.model`` beside them. Neither file carries a configuration (read off
the tensors) nor BERT's vocabulary (the caller names one)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..model.text_encoder import BilingualTextEncoder
from . import kinds
from .files import StateDict, read_state_dict, reading
from .text_encoder_files import CPU, mt5_tokenizer_from_bytes, text_encoder_from_weights

_CONTAINERS = ("state_dict", "model")


def _read(path: str | os.PathLike, kind: str, argument: str) -> StateDict:
    """The weights of one file, refused (after any truncation error) unless they are ``kind``."""
    sd = read_state_dict(path, _CONTAINERS, argument)
    found = kinds.describe_weights(sd)
    if found != kind:
        raise ModelFileError(f"{argument}: '{path}' is {found or 'no model this pack knows'}; expected {kind}")
    return sd


def load_text_encoder_from_files(bert_file: str | os.PathLike, mt5_file: str | os.PathLike,
                                 device: torch.device = CPU, dtype: torch.dtype = torch.float32,
                                 bert_vocab: str | os.PathLike | None = None) -> BilingualTextEncoder:
    """BERT + mT5 from two weight files; mT5's tokenizer is the ``spiece.model`` beside ``mt5_file``, BERT's
    vocabulary is ``bert_vocab`` (a vocab.txt or a tokenizer folder). A file of another kind (swapped files, a
    VAE) is named for what it is."""
    bert = _read(bert_file, kinds.BERT, "bert_file")
    mt5 = _read(mt5_file, kinds.T5, "mt5_file")
    spiece = Path(mt5_file).parent / "spiece.model"
    if not spiece.is_file():
        raise ModelFileError(
            f"mT5 tokenizer not found: expected '{spiece}' beside the mT5 weights (the spiece.model of the "
            "official t2i/mt5/ folder or of google/mt5-xl)"
        )
    if bert_vocab is None:
        raise ModelFileError(
            f"BERT vocabulary not found for '{bert_file}': pass bert_vocab= a vocab.txt or a BERT tokenizer folder "
            "(the official ckpts/t2i/tokenizer, or ComfyUI's comfy/text_encoders/hydit_clip_tokenizer)"
        )
    with reading(spiece, "mT5 tokenizer"):
        proto = spiece.read_bytes()
    mt5_tok = mt5_tokenizer_from_bytes(proto, f"mT5 tokenizer: '{spiece}'")
    return text_encoder_from_weights(bert, mt5, mt5_tok, bert_vocab, device, dtype, where="separate-files")
