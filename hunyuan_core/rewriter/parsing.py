"""Reading a language model's reply: is it a picture description, a refusal, or just chat?

A refusal is an answer, not an error: it comes back flagged so that callers can show it and draw nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DRAW_TAG = "<画图>"  # DialogGen puts it before a description when it recognised a drawing request
DIALOGGEN_REFUSAL = "对不起"  # "Sorry": the official code treats a reply starting with it as a refusal

DRAW, CHAT, REFUSE = "draw", "chat", "refuse"

_LEADING_COLON = re.compile(r"^\s*[:：]\s*")
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
_LABEL = re.compile(
    r"^\s*(?:prompt|image prompt|description|提示词|描述|画面描述|绘画描述)\s*[:：]\s*", re.IGNORECASE
)
_QUOTES = [("“", "”"), ('"', '"'), ("'", "'"), ("「", "」"), ("『", "』"), ("`", "`")]
_CHAT_REFUSALS = re.compile(
    r"^\s*(?:对不起|抱歉|很抱歉|sorry|i'm sorry|i am sorry|i can't|i cannot|i can not|i won't|i will not)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedReply:
    """``intent`` is ``"draw"``, ``"chat"`` or ``"refuse"``; ``prompt`` is what to draw ('' for a refusal)."""

    intent: str
    prompt: str


def parse_dialoggen(reply: str) -> ParsedReply:
    """DialogGen's rules: a leading ``<画图>`` marks a description, a leading ``对不起`` a refusal.

    A tag later in the reply (after some chat) also counts, taking the text after the last one, as the
    official multi-turn app does; any other reply is used as it is, as the official single-turn code does.
    """
    text = reply.strip()
    if text.startswith(DRAW_TAG):
        return ParsedReply(DRAW, _after_tag(text))
    if text.startswith(DIALOGGEN_REFUSAL):
        return ParsedReply(REFUSE, "")
    if DRAW_TAG in text:
        return ParsedReply(DRAW, _after_tag(text))
    return ParsedReply(CHAT, text)


def _after_tag(text: str) -> str:
    # The template reads "<画图>:{request}": some replies repeat the colon after the tag.
    return _LEADING_COLON.sub("", text.split(DRAW_TAG)[-1]).strip()


def parse_chat(reply: str) -> ParsedReply:
    """Our system prompt's rules for other LLMs: the reply is the description, or starts with 对不起/Sorry.

    Reasoning blocks (``<think>…</think>``), a DialogGen-style tag, a "Prompt:" label and wrapping
    quotes are removed; common refusal openings in either language count as refusals.
    """
    text = _THINKING.sub("", reply)
    if "</think>" in text:  # an opening tag the template put in the prompt: keep only the answer
        text = text.split("</think>")[-1]
    text = text.strip()
    if text.startswith(DRAW_TAG):
        text = _after_tag(text)
    text = _LABEL.sub("", text).strip()
    for left, right in _QUOTES:
        wrapped = len(text) >= 2 and text.startswith(left) and text.endswith(right)
        single = text.count(left) == 2 if left == right else text.count(left) == text.count(right) == 1
        if wrapped and single:
            text = text[len(left): -len(right)].strip()
            break
    if not text or _CHAT_REFUSALS.match(text):
        return ParsedReply(REFUSE, "")
    return ParsedReply(DRAW, text)
