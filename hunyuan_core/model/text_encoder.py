"""The bilingual text encoder: a BERT ("CLIP", 77 tokens) and the mT5-XL encoder (256 tokens).

Both see the same prompt; the DiT consumes both hidden-state sequences and their masks. Tokenization
follows the official pipeline and diffusers' ``HunyuanDiTPipeline.encode_prompt`` exactly:
``padding="max_length"``, ``truncation=True``, attention masks passed to the encoders, last hidden
state kept (reference/hunyuandit-official.md §1.4, §4.3).

Weights are read through :mod:`hunyuan_core.formats.files`, only the encoder half of an mT5 encoder-decoder
file is kept, and every tensor is materialised once, in the requested dtype and device, into a model
built on the meta device. Tokenizers come only from the model files; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, ModelFileError
from ..formats.files import (
    StateDict,
    confined,
    offline,
    read_folder_state_dict,
    read_json_object,
    reading,
    tensor_shape,
)
from ..settings.devices import resolve_device, resolve_dtype
from .materialise import build_with_weights

# hydit/constants.py NEGATIVE_PROMPT: used by the official pipeline whenever no negative prompt is given.
DEFAULT_NEGATIVE_PROMPT = "错误的眼睛，糟糕的人脸，毁容，糟糕的艺术，变形，多余的肢体，模糊的颜色，模糊，重复，病态，残缺，"

CLIP_LENGTH = 77  # BERT tokens (incl. [CLS]/[SEP]) the DiT was trained with
T5_LENGTH = 256  # mT5 tokens (incl. </s>)

# Keys of the ComfyUI all-in-one checkpoint (reference/comfyui-host.md §4.3).
SINGLE_FILE_BERT_PREFIX = "text_encoders.hydit_clip.transformer."
SINGLE_FILE_MT5_PREFIX = "text_encoders.mt5xl.transformer."
SINGLE_FILE_SPIECE_KEY = "text_encoders.mt5xl.spiece_model"

# Weight files a transformers model folder may hold, in the order they are tried.

# The official BERT tokenizer's settings (ckpts/t2i/tokenizer/tokenizer_config.json), used when only a vocab.txt is given.
_BERT_TOKENIZER_CONFIG = {
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
_MT5_TOKENIZER_CONFIG = {
    "tokenizer_class": "T5Tokenizer",
    "extra_ids": 0,
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "model_max_length": T5_LENGTH,
}


@dataclass
class TextEmbeddings:
    """Encoder outputs for a batch of prompts, in the shapes the DiT takes.

    ``clip`` [B,77,D], ``clip_mask`` [B,77], ``t5`` [B,256,D5], ``t5_mask`` [B,256] (masks are int64,
    1 = real token); ``truncated[i]`` is the tail of ``prompts[i]`` that at least one encoder could not
    see ('' when both saw all of it).
    """

    clip: torch.Tensor
    clip_mask: torch.Tensor
    t5: torch.Tensor
    t5_mask: torch.Tensor
    prompts: list[str]
    truncated: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.truncated:
            self.truncated = [""] * len(self.prompts)

    def __len__(self) -> int:
        return self.clip.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextEmbeddings:
        """Move to ``device``; cast the hidden states (not the masks) to ``dtype``."""
        return TextEmbeddings(
            self.clip.to(device=device, dtype=dtype),
            self.clip_mask.to(device=device),
            self.t5.to(device=device, dtype=dtype),
            self.t5_mask.to(device=device),
            list(self.prompts),
            list(self.truncated),
        )

    def repeat(self, n: int) -> TextEmbeddings:
        """Each prompt ``n`` times in a row (``a a b b`` for n=2), as for ``n`` images per prompt."""
        if n < 1:
            raise InputError(f"repeat count must be at least 1; got {n}")
        rep = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        return TextEmbeddings(
            rep(self.clip), rep(self.clip_mask), rep(self.t5), rep(self.t5_mask),
            [p for p in self.prompts for _ in range(n)], [t for t in self.truncated for _ in range(n)],
        )

    @staticmethod
    def cat(items: Sequence[TextEmbeddings]) -> TextEmbeddings:
        """Concatenate along the batch (e.g. ``[negative, positive]`` for classifier-free guidance)."""
        if not items:
            raise InputError("TextEmbeddings.cat needs at least one item")
        return TextEmbeddings(
            torch.cat([e.clip for e in items]),
            torch.cat([e.clip_mask for e in items]),
            torch.cat([e.t5 for e in items]),
            torch.cat([e.t5_mask for e in items]),
            [p for e in items for p in e.prompts],
            [t for e in items for t in e.truncated],
        )


class BilingualTextEncoder:
    """BERT + mT5 encoder with their tokenizers; ``encode`` turns prompts into :class:`TextEmbeddings`."""

    def __init__(self, bert: nn.Module, bert_tokenizer, mt5: nn.Module, mt5_tokenizer):
        self.bert = bert.eval()
        self.bert_tokenizer = bert_tokenizer
        self.mt5 = mt5.eval()
        self.mt5_tokenizer = mt5_tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.mt5.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.mt5.parameters()).dtype

    def to(self, device: torch.device | str) -> BilingualTextEncoder:
        """Move both encoders to ``device`` (e.g. offload to CPU between generations)."""
        self.bert.to(device)
        self.mt5.to(device)
        return self

    def encode(self, prompts: str | Sequence[str]) -> TextEmbeddings:
        """Encode prompts with both encoders; warn (and record) when a prompt is too long for either."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a string or a non-empty list of strings; got {prompts!r}")
        clip, clip_mask, clip_cut = _encode_one(self.bert, self.bert_tokenizer, prompts, CLIP_LENGTH)
        t5, t5_mask, t5_cut = _encode_one(self.mt5, self.mt5_tokenizer, prompts, T5_LENGTH)
        truncated = []
        for i, (a, b) in enumerate(zip(clip_cut, t5_cut)):
            if a or b:
                parts = [f"the {name} encoder ({n} tokens) ignores {cut!r}" for name, n, cut in
                         (("BERT", CLIP_LENGTH, a), ("mT5", T5_LENGTH, b)) if cut]
                warnings.warn(f"prompt {i} is too long: {' and '.join(parts)}", UserWarning, stacklevel=2)
            truncated.append(max(a, b, key=len))
        return TextEmbeddings(clip, clip_mask, t5, t5_mask, prompts, truncated)


def _encode_one(model: nn.Module, tokenizer, prompts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Tokenize to ``length`` exactly as the official pipeline does, run the encoder, find cut-off text."""
    tok = tokenizer(prompts, padding="max_length", max_length=length, truncation=True,
                    return_attention_mask=True, return_tensors="pt")
    device = next(model.parameters()).device
    ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask)[0]
    kept = length - tokenizer.num_special_tokens_to_add()
    cut = [_dropped_text(tokenizer, p, kept) if int(m.sum()) == length else "" for p, m in zip(prompts, mask)]
    return hidden, mask, cut


def _dropped_text(tokenizer, prompt: str, kept: int) -> str:
    """The part of ``prompt`` after its first ``kept`` tokens, quoted from the original text where possible."""
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast, verbose=False)
    ids = enc["input_ids"]
    if len(ids) <= kept:
        return ""
    if tokenizer.is_fast:
        return prompt[enc["offset_mapping"][kept][0]:].strip()
    return tokenizer.decode(ids[kept:]).strip()


# ----------------------------------------------------------------------------------------------- loading


def _build(factory: Callable[[], nn.Module], sd: Mapping[str, torch.Tensor], device: torch.device,
           dtype: torch.dtype, what: str) -> nn.Module:
    """Weights assigned once (see :func:`build_with_weights`), then BERT's non-stored buffers recreated."""
    model = build_with_weights(factory, sd, device, dtype, what)
    _materialise_buffers(model, device)
    return model


def _materialise_buffers(model: nn.Module, device: torch.device) -> None:
    """Recreate the non-persistent buffers (not in any weights file) that the meta device left empty."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":  # BERT: 0..max_position-1
                module._buffers[name] = torch.arange(buf.shape[-1], device=device).expand(buf.shape)
            elif name == "token_type_ids":  # BERT: all segment 0
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype, device=device)
            else:
                raise RuntimeError(f"{type(module).__name__}.{name}: unknown buffer left on the meta device")


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
    out = {}
    for k, v in sd.items():
        k = k[len("bert."):] if k.startswith("bert.") else k
        if k.startswith(("embeddings.", "encoder.")):
            out[k] = v
    return out


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


def _tokenizer_from_folder(cls, folder: Path, what: str):
    """``cls.from_pretrained`` on a local folder, given as an absolute path (never readable as a repo id),
    after checking that tokenizer_config.json is an object whose ``*_file`` entries stay inside the folder
    (transformers 4.x lets them override the folder's own files)."""
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        for key, value in read_json_object(cfg_path, what).items():
            if key.endswith("_file") and value is not None:
                confined(folder, value, f"{what}: '{cfg_path}' entry '{key}'")
    with _library_reads(what, folder):
        return cls.from_pretrained(str(folder.absolute()), local_files_only=True)


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
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(_BERT_TOKENIZER_CONFIG), encoding="utf-8")
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


def _mt5_tokenizer_from_bytes(spiece: bytes):
    """mT5 tokenizer from a serialized sentencepiece model (the all-in-one file embeds one)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spiece)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(_MT5_TOKENIZER_CONFIG), encoding="utf-8")
        return load_mt5_tokenizer(tmp)


def load_text_encoder_from_folders(
    bert_dir: str | os.PathLike,
    bert_tokenizer_dir: str | os.PathLike,
    mt5_dir: str | os.PathLike,
    mt5_tokenizer_dir: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> BilingualTextEncoder:
    """Load from transformers-style folders (official ``clip_text_encoder/``+``tokenizer/``+``mt5/``, or
    diffusers ``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``)."""
    from transformers import BertConfig

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
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


def load_text_encoder_from_single_file(
    sd: Mapping[str, torch.Tensor],
    bert_vocab: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> BilingualTextEncoder:
    """Load from a ComfyUI all-in-one state dict (``text_encoders.hydit_clip.*``, ``text_encoders.mt5xl.*``).

    The file embeds the mT5 sentencepiece model but not the BERT vocabulary: pass ``bert_vocab``
    (a vocab.txt, or a tokenizer folder such as the official ``ckpts/t2i/tokenizer`` or ComfyUI's
    ``comfy/text_encoders/hydit_clip_tokenizer``).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    bert_sd = _bert_weights({k[len(SINGLE_FILE_BERT_PREFIX):]: v for k, v in sd.items() if k.startswith(SINGLE_FILE_BERT_PREFIX)})
    t5_sd = _mt5_weights({k[len(SINGLE_FILE_MT5_PREFIX):]: v for k, v in sd.items() if k.startswith(SINGLE_FILE_MT5_PREFIX)})
    for name, part, probe in (("BERT", bert_sd, "embeddings.word_embeddings.weight"),
                              ("mT5", t5_sd, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")):
        if probe not in part:
            prefix = SINGLE_FILE_BERT_PREFIX if name == "BERT" else SINGLE_FILE_MT5_PREFIX
            raise ModelFileError(
                f"all-in-one checkpoint: no {name} text encoder: expected '{prefix}{probe}'; the file has "
                f"{len(sd)} tensors starting with: {', '.join(list(sd)[:4]) or 'none'}"
            )
    if SINGLE_FILE_SPIECE_KEY not in sd:
        raise ModelFileError(f"all-in-one checkpoint: no mT5 tokenizer: expected the uint8 tensor '{SINGLE_FILE_SPIECE_KEY}'")
    if bert_vocab is None:
        raise ModelFileError(
            "all-in-one checkpoint: the file carries no BERT vocabulary; pass bert_vocab= a vocab.txt or a "
            "BERT tokenizer folder (the official ckpts/t2i/tokenizer, or ComfyUI's "
            "comfy/text_encoders/hydit_clip_tokenizer)"
        )
    bert_tok = load_bert_tokenizer(bert_vocab)
    spiece = sd[SINGLE_FILE_SPIECE_KEY]
    if spiece.dtype != torch.uint8 or spiece.ndim != 1:
        raise ModelFileError(f"all-in-one checkpoint: '{SINGLE_FILE_SPIECE_KEY}' is a {spiece.dtype} tensor of shape "
                             f"{list(spiece.shape)}; expected the bytes of mT5's spiece.model as a 1-D uint8 tensor")
    spiece_bytes = spiece.cpu().numpy().tobytes()
    _check_spiece(spiece_bytes, f"all-in-one checkpoint: the tensor '{SINGLE_FILE_SPIECE_KEY}'")
    mt5_tok = _mt5_tokenizer_from_bytes(spiece_bytes)
    bert = _build(_new_bert(bert_config_from_weights(bert_sd)), bert_sd, device, dtype, "all-in-one BERT text encoder")
    mt5 = _build(_new_t5_encoder(t5_config_from_weights(t5_sd)), t5_sd, device, dtype, "all-in-one mT5 text encoder")
    return BilingualTextEncoder(bert, bert_tok, mt5, mt5_tok)
