"""The prompt rewriter: a language model backend plus history, reply parsing, instructions and the
encoder limit. ``load_rewriter`` (loader.py) builds one; ``rewrite`` is all callers need."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

from ..errors import InputError
from .instructions import Instruction
from .limits import MT5_TOKEN_LIMIT, TokenCounter, approx_mt5_tokens, fit_to_limit
from .local import GenerationOptions
from .parsing import DRAW, REFUSE, ParsedReply
from .session import Session
from .templates import History


class Backend(Protocol):
    """What a language model backend provides (DialogGen, local chat LLM, HTTP server)."""

    name: str
    style: str  # "dialoggen" or "chat": which prompt and reply conventions it follows
    defaults: GenerationOptions

    def complete(self, history: History, request: str, options: GenerationOptions) -> str: ...
    def parse(self, reply: str) -> ParsedReply: ...
    def unload(self) -> None: ...


@dataclass
class RewriteResult:
    """One rewrite. ``prompt`` is what to draw ('' when ``refused``); ``reply`` the model's raw answer.

    ``draw`` is False when the model answered without recognising a drawing request (DialogGen replies
    without ``<画图>``): ``prompt`` is then its text, as the official single-turn code uses it.
    ``truncated`` is what was cut to fit the text encoder. With a session, ``seed`` is the turn's seed
    and ``init_image``/``strength`` the previous picture to start from (None when img2img is off).
    """

    prompt: str
    refused: bool
    reply: str
    draw: bool
    truncated: str = ""
    seed: int | None = None
    init_image: str | None = None
    strength: float | None = None


class Rewriter:
    """Rewrites requests into Hunyuan-DiT prompts, optionally as turns of a :class:`Session`.

    ``temperature`` / ``max_new_tokens`` override the backend's defaults (DialogGen: the official 0.2 and
    512); ``temperature=0`` is greedy and ``seed`` makes sampling repeatable. ``count_tokens`` measures a
    prompt for the encoder limit ``max_prompt_tokens`` (default: an mT5 estimate, see limits.py);
    ``history_turns`` caps how many past turns are sent (None: as many as fit the model's context).
    """

    def __init__(self, backend: Backend, *, temperature: float | None = None, max_new_tokens: int | None = None,
                 seed: int | None = None, count_tokens: TokenCounter | None = None,
                 max_prompt_tokens: int = MT5_TOKEN_LIMIT, history_turns: int | None = None):
        self.backend = backend
        options = backend.defaults
        if temperature is not None:
            real = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            if not real or not 0 <= temperature < math.inf:
                raise InputError(f"temperature {temperature!r}: expected 0 (greedy) or a larger finite number")
            options = replace(options, temperature=float(temperature))
        if max_new_tokens is not None:
            if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
                raise InputError(f"max_new_tokens {max_new_tokens!r}: expected a whole number, 1 or more")
            options = replace(options, max_new_tokens=max_new_tokens)
        self.options = replace(options, seed=seed)
        self.count_tokens = count_tokens or approx_mt5_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.history_turns = history_turns

    @property
    def name(self) -> str:
        return self.backend.name

    def rewrite(self, text: str, session: Session | None = None, instruction: Instruction | None = None,
                count_tokens: TokenCounter | None = None) -> RewriteResult:
        """Rewrite ``text`` after ``session``'s history and record the turn in it; never raises for a refusal.

        An ``instruction`` with position ``before`` wraps the request the model reads; one with position
        ``after`` wraps the rewritten prompt (the description is shortened, never the instruction).
        ``count_tokens`` replaces the rewriter's counter for this call (e.g. the encoder's own tokenizer).
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError("the request is empty: say what to draw, or how to change the last picture")
        request = text.strip()
        if instruction is not None and instruction.position == "before":
            request = instruction.apply(request)
        history = session.history(self.history_turns) if session is not None else []
        reply = self.backend.complete(history, request, self.options)
        parsed = self.backend.parse(reply)
        prompt, truncated = parsed.prompt, ""
        if parsed.intent != REFUSE:
            wrap = instruction.apply if instruction is not None and instruction.position == "after" else (lambda s: s)
            kept, truncated = fit_to_limit(prompt, count_tokens or self.count_tokens, self.max_prompt_tokens, wrap)
            prompt = wrap(kept)
        refused = parsed.intent == REFUSE
        result = RewriteResult(prompt=prompt, refused=refused, reply=reply, draw=parsed.intent == DRAW,
                               truncated=truncated)
        if session is not None:
            init = session.init_image()
            turn = session.add_turn(request, reply, prompt, refused)
            result.seed = turn.seed
            result.init_image, result.strength = (init, session.img2img_strength) if init else (None, None)
        return result

    def unload(self) -> None:
        """Free the model's memory (local models load again on the next rewrite)."""
        self.backend.unload()
