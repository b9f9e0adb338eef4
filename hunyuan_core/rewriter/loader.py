"""``load_rewriter``: one entry point for DialogGen, local chat LLMs and OpenAI-compatible servers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ModelFileError
from .chat_llm import ChatLLMBackend, is_chat_model_folder
from .dialoggen import DialogGenBackend, is_llava_folder
from .http_backend import HttpBackend
from .limits import MT5_TOKEN_LIMIT, TokenCounter
from .rewriter import Rewriter
from .templates import SYSTEM_PROMPT


def find_dialoggen(path: str | os.PathLike) -> Path | None:
    """The DialogGen checkpoint folder at ``path``: the folder itself, or ``dialoggen/`` inside an official
    ``ckpts`` folder or the HunyuanDiT download root."""
    path = Path(path)
    for candidate in (path, path / "dialoggen", path / "ckpts" / "dialoggen"):
        if is_llava_folder(candidate):
            return candidate
    return None


def load_rewriter(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    model: str | None = None,
    quantize: str | None = None,
    keep_loaded: bool = False,
    make_room: Callable[[int], None] | None = None,
    timeout: float = 120.0,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    count_tokens: TokenCounter | None = None,
    max_prompt_tokens: int = MT5_TOKEN_LIMIT,
    history_turns: int | None = None,
    system_prompt: str | None = None,
    api_key: str | None = None,
    allow_insecure_http: bool = False,
) -> Rewriter:
    """Load a prompt rewriter from ``path``:

    * an ``http(s)://`` URL: an OpenAI-compatible server (``model`` names the served model; default: the
      first it lists), every request bounded by ``timeout`` seconds in total; ``api_key`` (default: the
      ``HUNYUAN_REWRITER_API_KEY`` environment variable) goes only to that server, and over plain http only
      to this machine unless ``allow_insecure_http``;
    * DialogGen's folder (``ckpts/dialoggen``, or the ``ckpts`` folder holding it): the official rewriter
      with its template and sampling (temperature 0.2, 512 new tokens);
    * any Hugging Face chat LLM folder: our bilingual instructions through the model's chat template.

    Local models rest on the CPU and use ``device`` (default CUDA when available) only while writing,
    unless ``keep_loaded``; ``make_room(bytes)`` runs before they go to a GPU (a host frees memory there);
    ``quantize`` ``"4bit"``/``"8bit"`` needs bitsandbytes and CUDA. The other
    arguments are those of :class:`Rewriter`; ``system_prompt`` replaces our instructions for chat LLMs
    and servers (DialogGen's template is fixed).
    """
    text = str(path)
    prompt = system_prompt or SYSTEM_PROMPT
    if "://" in text:  # a server address (only http and https are accepted)
        backend = HttpBackend(text, model=model, timeout=timeout, api_key=api_key, system_prompt=prompt,
                              allow_insecure_http=allow_insecure_http)
    else:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise ModelFileError(f"rewriter model not found: '{folder}' does not exist")
        dialoggen = find_dialoggen(folder)
        if dialoggen is not None:
            backend = DialogGenBackend(dialoggen, device=device, dtype=dtype, quantize=quantize, keep_loaded=keep_loaded,
                                       make_room=make_room)
        elif is_chat_model_folder(folder):
            backend = ChatLLMBackend(folder, device=device, dtype=dtype, quantize=quantize, keep_loaded=keep_loaded,
                                     make_room=make_room, system_prompt=prompt)
        else:
            raise ModelFileError(
                f"rewriter model: '{folder}' is neither DialogGen (an original LLaVA folder, or a ckpts folder "
                "with dialoggen/ inside) nor a Hugging Face chat model folder (config.json + tokenizer); "
                "for a server, pass its http:// address"
            )
    return Rewriter(backend, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                    count_tokens=count_tokens, max_prompt_tokens=max_prompt_tokens, history_turns=history_turns)
