"""The bilingual text encoder: a BERT ("CLIP", 77 tokens) and the mT5-XL encoder (256 tokens).

Both see the same prompt; the DiT consumes both hidden-state sequences and their masks. Tokenization
follows the official pipeline and diffusers' ``HunyuanDiTPipeline.encode_prompt`` exactly:
``padding="max_length"``, ``truncation=True``, attention masks passed to the encoders, last hidden
state kept (reference/hunyuandit-official.md §1.4, §4.3). Reading the encoders from disk is
:mod:`hunyuan_core.formats.text_encoder_files`.

Opt-in long prompts: ``bert_length`` above 77 (up to the BERT's 512 positions, as ComfyUI's native
Hunyuan-DiT allows) lets BERT read further. Every release was trained on 77 BERT tokens, so this goes beyond
the official model; a prompt that fits in 77 tokens is encoded exactly as by default.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError

# hydit/constants.py NEGATIVE_PROMPT: used by the official pipeline whenever no negative prompt is given.
DEFAULT_NEGATIVE_PROMPT = "错误的眼睛，糟糕的人脸，毁容，糟糕的艺术，变形，多余的肢体，模糊的颜色，模糊，重复，病态，残缺，"

CLIP_LENGTH = 77  # BERT tokens (incl. [CLS]/[SEP]) the DiT was trained with; the default, and the minimum
T5_LENGTH = 256  # mT5 tokens (incl. </s>)


@dataclass
class TextEmbeddings:
    """Encoder outputs for a batch of prompts, in the shapes the DiT takes.

    ``clip`` [B,L,D], ``clip_mask`` [B,L], ``t5`` [B,256,D5], ``t5_mask`` [B,256] (masks are int64,
    1 = real token; L is 77, or up to the encoder's ``bert_length`` for longer prompts when opted in); ``truncated[i]`` is the tail of ``prompts[i]`` that at least one encoder could not
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
        """Concatenate along the batch (e.g. ``[negative, positive]`` for classifier-free guidance). BERT sequences
        of different lengths (long prompts opted in) are padded to the longest with masked positions, which the
        DiT fills with its learned padding."""
        if not items:
            raise InputError("TextEmbeddings.cat needs at least one item")
        longest = max(e.clip.shape[1] for e in items)
        return TextEmbeddings(
            torch.cat([_pad_tokens(e.clip, longest) for e in items]),
            torch.cat([_pad_tokens(e.clip_mask, longest) for e in items]),
            torch.cat([e.t5 for e in items]),
            torch.cat([e.t5_mask for e in items]),
            [p for e in items for p in e.prompts],
            [t for e in items for t in e.truncated],
        )


def _pad_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    """``[B, L, ...]`` zero-padded along the token axis to ``length`` (a zero mask marks the new positions)."""
    extra = length - t.shape[1]
    return t if extra == 0 else torch.cat([t, t.new_zeros(t.shape[0], extra, *t.shape[2:])], dim=1)


class BilingualTextEncoder:
    """BERT + mT5 encoder with their tokenizers; ``encode`` turns prompts into :class:`TextEmbeddings`."""

    def __init__(self, bert: nn.Module, bert_tokenizer, mt5: nn.Module, mt5_tokenizer, bert_length: int = CLIP_LENGTH):
        self.bert = bert.eval()
        self.bert_tokenizer = bert_tokenizer
        self.mt5 = mt5.eval()
        self.mt5_tokenizer = mt5_tokenizer
        self.bert_length = self.check_bert_length(bert_length)

    def check_bert_length(self, length: object) -> int:
        """``length`` if BERT can read that many tokens: 77 (the official length) up to its position table."""
        from ..settings.validate import check_int

        most = self.bert.config.max_position_embeddings
        return check_int(f"bert_length (official {CLIP_LENGTH}; this BERT has {most} positions)", length,
                         CLIP_LENGTH, most)

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

    def encode(self, prompts: str | Sequence[str], bert_length: int | None = None) -> TextEmbeddings:
        """Encode prompts with both encoders; warn (and record) when a prompt is too long for either.
        ``bert_length`` (default: the encoder's, 77 unless opted in) is how far BERT may read."""
        bert_length = self.bert_length if bert_length is None else self.check_bert_length(bert_length)
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a string or a non-empty list of strings; got {prompts!r}")
        clip, clip_mask, clip_cut = _encode_one(self.bert, self.bert_tokenizer, prompts, CLIP_LENGTH, bert_length)
        t5, t5_mask, t5_cut = _encode_one(self.mt5, self.mt5_tokenizer, prompts, T5_LENGTH)
        truncated = []
        for i, (a, b) in enumerate(zip(clip_cut, t5_cut)):
            if a or b:
                parts = [f"the {name} encoder ({n} tokens) ignores {cut!r}" for name, n, cut in
                         (("BERT", bert_length, a), ("mT5", T5_LENGTH, b)) if cut]
                warnings.warn(f"prompt {i} is too long: {' and '.join(parts)}", UserWarning, stacklevel=2)
            truncated.append(max(a, b, key=len))
        return TextEmbeddings(clip, clip_mask, t5, t5_mask, prompts, truncated)


def _encode_one(model: nn.Module, tokenizer, prompts: list[str], length: int,
                longest: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Tokenize to ``length`` exactly as the official pipeline does, run the encoder, find cut-off text.
    ``longest`` > ``length`` pads to the longest prompt instead when one needs more, reading at most that far."""
    if longest is not None and longest > length:
        needed = tokenizer(prompts, truncation=True, max_length=longest)["input_ids"]
        length = max(length, *(len(ids) for ids in needed))
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
