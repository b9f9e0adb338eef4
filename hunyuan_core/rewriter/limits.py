"""Keeping a rewritten prompt within what Hunyuan-DiT's mT5 encoder reads (256 tokens).

Text past the limit would be silently ignored by the encoder, so the rewriter cuts it itself — at a
clause boundary where it can — and reports what it dropped. The exact count comes from the model's own
mT5 tokenizer when the caller has one (:func:`tokenizer_counter`); otherwise :func:`approx_mt5_tokens`
estimates it, erring on the long side so that an estimate that fits always fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MT5_TOKEN_LIMIT = 256  # Hunyuan-DiT's text_len_t5, including the closing </s>

TokenCounter = Callable[[str], int]

_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_DIGITS = re.compile(r"[0-9]+")
_BOUNDARY = re.compile(r"[，。；！？、,.;!?\s]")


def approx_mt5_tokens(text: str) -> int:
    """An upper estimate of mT5's token count for ``text`` (with the closing ``</s>``).

    mT5's sentencepiece vocabulary holds most CJK characters and many two-character words as single
    pieces, most English words as one or two: so count one token per CJK character or symbol, one per
    digit, and ``1 + len // 6`` per Latin word.
    """
    count = 1
    rest = text
    count += len(_CJK.findall(rest))
    rest = _CJK.sub(" ", rest)
    count += sum(1 + len(word) // 6 for word in _WORD.findall(rest))
    rest = _WORD.sub(" ", rest)
    count += sum(len(run) for run in _DIGITS.findall(rest))
    rest = _DIGITS.sub(" ", rest)
    count += sum(1 for ch in rest if not ch.isspace())
    return count


def tokenizer_counter(tokenizer) -> TokenCounter:
    """An exact counter from a Hugging Face tokenizer (e.g. the text encoder's mT5 tokenizer)."""
    return lambda text: len(tokenizer(text, add_special_tokens=True)["input_ids"])


def fit_to_limit(
    text: str, count: TokenCounter, limit: int, wrap: Callable[[str], str] = lambda s: s
) -> tuple[str, str]:
    """Cut ``text`` so that ``count(wrap(text))`` fits ``limit``; returns ``(kept, dropped)``.

    ``wrap`` puts the kept text in its final context (a saved instruction applied after rewriting), so
    the instruction survives and the description gives way. The cut falls on the last clause or word
    boundary of the longest prefix that fits, unless that would lose more than half of it.
    """
    if count(wrap(text)) <= limit:
        return text, ""
    low, high = 0, len(text)  # longest prefix length that fits lies in [low, high)
    while low < high - 1:
        middle = (low + high) // 2
        if count(wrap(text[:middle])) <= limit:
            low = middle
        else:
            high = middle
    cut = low
    boundaries = [m.start() for m in _BOUNDARY.finditer(text, 0, low + 1)]  # a boundary right after counts
    if boundaries and boundaries[-1] >= low // 2:
        cut = boundaries[-1]
    kept = text[:cut].rstrip("，,；;、 \t\n")
    return kept, text[len(kept):].lstrip("，,；;、。.!?！？ \t\n").rstrip()
