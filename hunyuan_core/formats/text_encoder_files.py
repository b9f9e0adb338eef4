"""Reading the bilingual text encoder (BERT + mT5 and their tokenizers) from disk.

Two ways the weights come: transformers-style folders (official ``clip_text_encoder/``, ``tokenizer/``,
``mt5/``; diffusers ``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``), or bare weights
whose configuration is read off the tensors (the ComfyUI all-in-one file, two separate weight files). Only the
encoder half of an mT5 encoder-decoder is kept, and every tensor is materialised once, in the given dtype and
device, into a model built on the meta device. Tokenizers come only from the model files; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelFileError
from ..model.materialise import build_with_weights, materialise_buffers
from ..model.text_encoder import CLIP_LENGTH, T5_LENGTH, BilingualTextEncoder
from .files import (
    StateDict,
    offline,
    read_folder_state_dict,
    read_json_object,
    reading,
    stays_inside,
    tensor_shape,
)
from .keys import strip_prefix

CPU = torch.device("cpu")

# The official BERT tokenizer's settings (ckpts/t2i/tokenizer/tokenizer_config.json), used when only a vocab.txt is given.
BERT_TOKENIZER_CONFIG = {
    "tokenizer_class": "BertTokenizer",
    "do_lower_case": True,
    "model_max_length": CLIP_LENGTH,
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
_BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # a WordPiece vocabulary without them cannot tokenize
# mT5's sentencepiece conventions (pad 0, eos 1, unk 2, no sentinel tokens), used for the embedded spiece model.
MT5_TOKENIZER_CONFIG = {
    "tokenizer_class": "T5Tokenizer",
    "extra_ids": 0,
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "model_max_length": T5_LENGTH,
}





def _build(factory: Callable[[], nn.Module], sd: Mapping[str, torch.Tensor], device: torch.device,
           dtype: torch.dtype, what: str) -> nn.Module:
    """Weights assigned once (see :func:`build_with_weights`), then BERT's non-stored buffers recreated."""
    model = build_with_weights(factory, sd, device, dtype, what)
    materialise_buffers(model, device)
    return model


def _check_dir(folder: str | os.PathLike, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"{what} not found: expected a folder at '{folder}'" +
                             (" but it is a file" if folder.exists() else ""))
    return folder


def _read_config(folder: Path, what: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFileError(f"{what}: '{folder}' has no config.json")
    return read_json_object(path, what)


@contextmanager
def _library_reads(what: str, path: str | os.PathLike) -> Iterator[None]:
    """transformers reading model files from ``path``: with the hub off, and any failure a ModelFileError.

    transformers, tokenizers and sentencepiece fail on a corrupt or hostile file with assorted exception
    types (protobuf errors, tokenizers' bare Exception, strict-dataclass errors for a config value of the
    wrong type); at this boundary each of them means the file is bad, so each is reported as such.
    """
    with offline():
        try:
            yield
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 (see above)
            raise ModelFileError(f"{what}: '{path}' could not be read ({type(exc).__name__}: {exc})") from None


def _config_kwargs(cfg: dict) -> dict:
    """A saved config minus the bookkeeping fields: the class sets ``model_type`` itself, and private
    ``_*`` entries (e.g. transformers 4.4x's ``_attn_implementation_autoset``) would pin the attention kernel."""
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("model_type", "architectures", "transformers_version")}


def _bert_weights(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """BERT weights without a ``bert.`` prefix; drops the ``visual.*`` tower and anything else that is not BERT."""
    if any(k.startswith("bert.") for k in sd):
        sd = strip_prefix(sd, "bert.")
    return {k: v for k, v in sd.items() if k.startswith(("embeddings.", "encoder."))}


def _mt5_weights(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """The encoder half of (m)T5 weights; the tied input embedding is filled in under both of its names."""
    out = {k: v for k, v in sd.items() if k == "shared.weight" or k.startswith("encoder.")}
    emb = out.get("shared.weight", out.get("encoder.embed_tokens.weight"))
    if emb is not None:
        out["shared.weight"] = out["encoder.embed_tokens.weight"] = emb
    return out


def _is_bert_key(k: str) -> bool:
    return k.startswith(("bert.embeddings.", "bert.encoder.", "embeddings.", "encoder."))


def _is_mt5_encoder_key(k: str) -> bool:
    return k == "shared.weight" or k.startswith("encoder.")


def _new_bert(config) -> Callable[[], nn.Module]:
    from transformers import BertModel

    return lambda: BertModel(config, add_pooling_layer=False)


def _new_t5_encoder(config) -> Callable[[], nn.Module]:
    from transformers import MT5EncoderModel, T5EncoderModel

    cls = MT5EncoderModel if config.model_type == "mt5" else T5EncoderModel
    return lambda: cls(config)


def _t5_config_from_json(cfg: dict):
    """MT5Config or T5Config (by ``model_type``: their defaults differ) for an encoder-only model."""
    from transformers import MT5Config, T5Config

    cls = MT5Config if cfg.get("model_type") == "mt5" else T5Config
    return cls(**{**_config_kwargs(cfg), "is_encoder_decoder": False, "use_cache": False})


def _check_bert_vocab(vocab: Path, what: str) -> None:
    with reading(vocab, what):
        tokens = {line.strip() for line in vocab.read_text(encoding="utf-8", errors="replace").splitlines()}
    missing = [t for t in _BERT_SPECIAL_TOKENS if t not in tokens]
    if missing:
        found = "is empty" if not tokens - {""} else f"lacks {', '.join(missing)}"
        raise ModelFileError(f"{what}: '{vocab}' {found}; expected a BERT vocab.txt, one token per line, with "
                             f"{', '.join(_BERT_SPECIAL_TOKENS)}")


def _check_spiece(data: bytes, where: str) -> None:
    import sentencepiece

    try:
        pieces = sentencepiece.SentencePieceProcessor(model_proto=data).GetPieceSize()
    except RuntimeError:
        pieces = 0
    if not pieces:
        raise ModelFileError(f"{where} is not a sentencepiece model ({len(data):,} bytes that do not parse as one); "
                             "expected the spiece.model of mT5")


# The files a BERT or T5 tokenizer reads from its folder (everything else there, weights included, is ignored).
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "special_tokens_map.json", "added_tokens.json", "spiece.model")


def _tokenizer_from_folder(cls, folder: Path, what: str):
    """``cls.from_pretrained`` on a local folder, given as an absolute path (never readable as a repo id).

    tokenizer_config.json must be an object. Its ``*_file`` entries may name files that transformers 4.x
    would read instead of the folder's own; tokenizers saved by older transformers record an absolute path
    on the author's machine there (ComfyUI's own hydit_clip_tokenizer, many official folders). Such entries
    are dropped: the tokenizer is read from a copy of the folder's tokenizer files, never from elsewhere.
    """
    cfg_path = folder / "tokenizer_config.json"
    config = read_json_object(cfg_path, what) if cfg_path.is_file() else None
    foreign = [k for k, v in (config or {}).items() if k.endswith("_file") and v is not None and not stays_inside(v)]
    if not foreign:
        with _library_reads(what, folder):
            return cls.from_pretrained(str(folder.absolute()), local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                with reading(folder / name, what):
                    (Path(tmp) / name).write_bytes((folder / name).read_bytes())
        kept = {k: v for k, v in config.items() if k not in foreign}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(kept), encoding="utf-8")
        with _library_reads(what, folder):
            return cls.from_pretrained(tmp, local_files_only=True)


def load_bert_tokenizer(path: str | os.PathLike):
    """BERT tokenizer from a tokenizer folder, or from a bare ``vocab.txt`` with the official settings."""
    from transformers import BertTokenizerFast

    path = Path(path)
    what = "BERT tokenizer"
    if path.is_dir():
        if (path / "vocab.txt").is_file():
            _check_bert_vocab(path / "vocab.txt", what)
        elif not (path / "tokenizer.json").is_file():
            raise ModelFileError(f"BERT tokenizer folder '{path}' has neither vocab.txt nor tokenizer.json")
        return _tokenizer_from_folder(BertTokenizerFast, path, what)
    if not path.is_file():
        raise ModelFileError(f"BERT vocabulary not found: '{path}' does not exist (expected vocab.txt or a tokenizer folder)")
    _check_bert_vocab(path, what)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_bytes(path.read_bytes())
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(BERT_TOKENIZER_CONFIG), encoding="utf-8")
        return _tokenizer_from_folder(BertTokenizerFast, Path(tmp), what)


def load_mt5_tokenizer(path: str | os.PathLike):
    """mT5 tokenizer from a folder holding ``spiece.model`` (and usually its tokenizer_config.json)."""
    from transformers import T5TokenizerFast

    path = _check_dir(path, "mT5 tokenizer folder")
    spiece = path / "spiece.model"
    if not spiece.is_file() and not (path / "tokenizer.json").is_file():
        raise ModelFileError(f"mT5 tokenizer folder '{path}' has neither spiece.model nor tokenizer.json")
    with reading(spiece, "mT5 tokenizer"):
        proto = spiece.read_bytes() if spiece.is_file() else None
    if proto is not None:
        _check_spiece(proto, f"mT5 tokenizer: '{spiece}'")
    tokenizer = _tokenizer_from_folder(T5TokenizerFast, path, "mT5 tokenizer")
    tokenizer.spiece_model_proto = proto  # kept so the model can be written as an all-in-one file, which embeds it
    return tokenizer


def load_text_encoder_from_folders(
    bert_dir: str | os.PathLike,
    bert_tokenizer_dir: str | os.PathLike,
    mt5_dir: str | os.PathLike,
    mt5_tokenizer_dir: str | os.PathLike,
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
) -> BilingualTextEncoder:
    """Load from transformers-style folders (official ``clip_text_encoder/``+``tokenizer/``+``mt5/``, or
    diffusers ``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``)."""
    from transformers import BertConfig

    bert_dir = _check_dir(bert_dir, "BERT text encoder folder")
    mt5_dir = _check_dir(mt5_dir, "mT5 text encoder folder")
    bert_tok = load_bert_tokenizer(_check_dir(bert_tokenizer_dir, "BERT tokenizer folder"))
    mt5_tok = load_mt5_tokenizer(mt5_tokenizer_dir)

    what = f"BERT text encoder '{bert_dir}'"
    with _library_reads(what, bert_dir / "config.json"):
        bert_cfg = BertConfig(**_config_kwargs(_read_config(bert_dir, what)))
    bert_sd = _bert_weights(read_folder_state_dict(bert_dir, what, _is_bert_key))
    bert = _build(_new_bert(bert_cfg), bert_sd, device, dtype, what)
    del bert_sd

    what = f"mT5 text encoder '{mt5_dir}'"
    with _library_reads(what, mt5_dir / "config.json"):
        t5_cfg = _t5_config_from_json(_read_config(mt5_dir, what))
    t5_sd = _mt5_weights(read_folder_state_dict(mt5_dir, what, _is_mt5_encoder_key))
    mt5 = _build(_new_t5_encoder(t5_cfg), t5_sd, device, dtype, what)
    return BilingualTextEncoder(bert, bert_tok, mt5, mt5_tok)


def bert_heads_for(hidden_size: int) -> int:
    """Attention heads of a BERT whose config is not stored: head size 64 (BERT-base/-large and the
    HunyuanDiT encoder: 1024/64 = 16); a width that is not a multiple of 64 (tiny test models) uses head
    size 16, and a width below 16 one head."""
    if hidden_size % 64 == 0:
        return hidden_size // 64
    if hidden_size % 16 == 0:
        return hidden_size // 16
    return 1


def _layer_count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(ids) + 1 if ids else 0


def bert_config_from_weights(sd: Mapping[str, torch.Tensor]):
    """BertConfig read off BERT weights (no ``bert.`` prefix); unstored settings are the BERT defaults
    (gelu, layer-norm eps 1e-12), which are those of chinese-roberta-wwm-ext-large."""
    from transformers import BertConfig

    shape = partial(tensor_shape, sd, where="BERT text encoder weights")  # (key, ndim) -> checked shape
    vocab, hidden = shape("embeddings.word_embeddings.weight", 2)
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=_layer_count(sd, r"encoder\.layer\.(\d+)\."),
        num_attention_heads=bert_heads_for(hidden),
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight", 2)[0],
        max_position_embeddings=shape("embeddings.position_embeddings.weight", 2)[0],
        type_vocab_size=shape("embeddings.token_type_embeddings.weight", 2)[0],
    )


def t5_config_from_weights(sd: Mapping[str, torch.Tensor]):
    """T5Config of an (m)T5 encoder read off its weights: heads and buckets from the relative attention
    bias, gated-GELU (mT5) when ``wi_0`` exists."""
    from transformers import T5Config

    shape = partial(tensor_shape, sd, where="mT5 text encoder weights")  # (key, ndim) -> checked shape
    vocab, d_model = shape("shared.weight", 2)
    attn = "encoder.block.0.layer.0.SelfAttention."
    buckets, heads = shape(attn + "relative_attention_bias.weight", 2)
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    d_ff = shape("encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight", 2)[0]
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=shape(attn + "q.weight", 2)[0] // heads,
        d_ff=d_ff,
        num_layers=_layer_count(sd, r"encoder\.block\.(\d+)\."),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu" if gated else "relu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )


def mt5_tokenizer_from_bytes(spiece: bytes, where: str):
    """mT5 tokenizer from a serialized sentencepiece model (embedded in an all-in-one file, or a spiece.model),
    checked first so that a file of another kind is named as such."""
    _check_spiece(spiece, where)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spiece)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(MT5_TOKENIZER_CONFIG), encoding="utf-8")
        return load_mt5_tokenizer(tmp)


def text_encoder_from_weights(bert_sd: Mapping[str, torch.Tensor], t5_sd: Mapping[str, torch.Tensor], mt5_tokenizer,
                              bert_vocab: str | os.PathLike, device: torch.device = CPU,
                              dtype: torch.dtype = torch.float32, where: str = "separate-files") -> BilingualTextEncoder:
    """BERT + mT5 from bare weights (any ``bert.`` prefix allowed; mT5 encoder or encoder-decoder names), their
    configurations read off the tensors; ``bert_vocab`` is a vocab.txt or a BERT tokenizer folder."""
    bert_sd, t5_sd = _bert_weights(bert_sd), _mt5_weights(t5_sd)
    bert_tok = load_bert_tokenizer(bert_vocab)
    bert = _build(_new_bert(bert_config_from_weights(bert_sd)), bert_sd, device, dtype, f"{where} BERT text encoder")
    mt5 = _build(_new_t5_encoder(t5_config_from_weights(t5_sd)), t5_sd, device, dtype, f"{where} mT5 text encoder")
    return BilingualTextEncoder(bert, bert_tok, mt5, mt5_tokenizer)
