"""Any local chat LLM in Hugging Face format (Qwen, Hunyuan, Llama, Mistral instruct models, ...).

It is driven by its own chat template and by our system prompt (templates.SYSTEM_PROMPT), which asks for
one concrete Hunyuan-DiT description in the user's language. Only architectures the installed
transformers implements are accepted: we never run code shipped with a model (``trust_remote_code``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError, ModelFileError
from ..settings.devices import resolve_device, resolve_dtype
from .local import (
    GenerationOptions,
    LocalModel,
    dtype_kwargs,
    generate,
    quantization_kwargs,
)
from .parsing import ParsedReply, parse_chat
from .templates import SYSTEM_PROMPT, History, chat_messages, fit_history

CHAT_OPTIONS = GenerationOptions(temperature=0.7, max_new_tokens=512)
_HUGE = 1_000_000  # tokenizers without a real limit report model_max_length as about 1e30


def is_chat_model_folder(folder: str | os.PathLike) -> bool:
    """True for a Hugging Face causal-LM folder (``config.json`` plus a tokenizer)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))


class ChatLLMBackend:
    """Generates replies with a local instruct model through its chat template."""

    style = "chat"
    defaults = CHAT_OPTIONS

    def __init__(self, folder: str | os.PathLike, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, quantize: str | None = None, keep_loaded: bool = False,
                 make_room: Callable[[int], None] | None = None,
                 system_prompt: str = SYSTEM_PROMPT):
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.name = f"chat LLM ({self.folder})"
        self.system_prompt = system_prompt
        config = _check_architecture(self.folder)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"chat LLM: no usable tokenizer in '{self.folder}': {exc}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelFileError(
                f"chat LLM: the tokenizer in '{self.folder}' has no chat template; use an instruct/chat model "
                "(e.g. a '-Instruct' release), not a base model"
            )
        limits = [n for n in (getattr(self.tokenizer, "model_max_length", None),
                              config.get("max_position_embeddings")) if isinstance(n, int) and 0 < n < _HUGE]
        self.max_context = min(limits) if limits else 4096
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, cpu_default=torch.bfloat16)  # half the memory of fp32
        extra = quantization_kwargs(quantize, self.device, self.dtype)
        self.model = LocalModel(lambda: self._load(extra), self.device, bool(extra), keep_loaded, make_room)

    def _load(self, extra: dict) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(self.folder), local_files_only=True, low_cpu_mem_usage=True, **dtype_kwargs(self.dtype), **extra)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"chat LLM: could not load the weights in '{self.folder}': {exc}") from None
        return model.eval()

    def parse(self, reply: str) -> ParsedReply:
        return parse_chat(reply)

    def prompt_text(self, history: History, request: str) -> str:
        """The conversation rendered by the model's chat template, ready for the assistant's turn."""
        messages = chat_messages(history, request, self.system_prompt)
        # enable_thinking=False: Qwen3-style templates skip their reasoning block; others ignore it.
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    def prompt_ids(self, history: History, request: str) -> list[int]:
        return self.tokenizer(self.prompt_text(history, request), add_special_tokens=False).input_ids

    def complete(self, history: History, request: str, options: GenerationOptions) -> str:
        """The model's raw reply (oldest turns dropped until the conversation fits its context)."""
        budget = self.max_context - options.max_new_tokens
        ids = fit_history(history, lambda kept: self.prompt_ids(kept, request), len, budget)
        if len(ids) > budget:
            raise InputError(f"chat LLM: the request is too long: {len(ids)} tokens leave no room within the "
                             f"model's {self.max_context}-token context for {options.max_new_tokens} new tokens")
        with self.model.use() as model:
            device = next(model.parameters()).device
            input_ids = torch.tensor([ids], device=device)
            out = generate(model, options, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           eos_token_id=self._stop_ids(model), pad_token_id=self._pad_id())
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()

    def _stop_ids(self, model: torch.nn.Module) -> list[int]:
        """End of turn: the model's configured eos ids and the tokenizer's eos (chat models often differ)."""
        configured = getattr(model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        ids = [i for i in ids + [self.tokenizer.eos_token_id] if i is not None]
        return list(dict.fromkeys(ids))

    def _pad_id(self) -> int | None:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def unload(self) -> None:
        self.model.release()


def _check_architecture(folder: Path) -> dict:
    """The folder's config, after checking that the installed transformers implements its architecture."""
    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"chat LLM: cannot read '{folder / 'config.json'}': {exc}") from None
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        import transformers

        hint = (" It ships its own modelling code (auto_map), which we never run." if "auto_map" in config else "")
        raise ModelFileError(
            f"chat LLM: '{folder}' is a '{model_type}' model, which transformers {transformers.__version__} does "
            f"not implement.{hint} Update transformers, or pick a model of a supported architecture"
        )
    return config
