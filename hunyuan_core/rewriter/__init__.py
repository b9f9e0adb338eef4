"""Prompt rewriting and multi-turn drawing: DialogGen, local chat LLMs or an OpenAI-compatible server turn a
short request into a rich Hunyuan-DiT prompt, keep the conversation, and apply saved instructions."""

from .http_backend import BackendError
from .instructions import BUILTIN_INSTRUCTIONS, POSITIONS, Instruction, InstructionStore
from .limits import MT5_TOKEN_LIMIT, approx_mt5_tokens, fit_to_limit, tokenizer_counter
from .loader import find_dialoggen, load_rewriter
from .rewriter import Rewriter, RewriteResult
from .session import Session, SessionStore, Turn
from .templates import DIALOGGEN_QUERY, SYSTEM_PROMPT
from .userdir import user_dir

__all__ = [
    "BUILTIN_INSTRUCTIONS", "BackendError", "DIALOGGEN_QUERY", "Instruction", "InstructionStore", "MT5_TOKEN_LIMIT",
    "POSITIONS", "RewriteResult", "Rewriter", "SYSTEM_PROMPT", "Session", "SessionStore", "Turn", "approx_mt5_tokens",
    "find_dialoggen", "fit_to_limit", "load_rewriter", "tokenizer_counter", "user_dir",
]
