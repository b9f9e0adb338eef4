"""A local language model that takes the GPU only while it writes.

A 7B LLM in fp16 needs about 15 GB, as much as Hunyuan-DiT itself, so by default it rests on the CPU and
visits the compute device for each rewrite. A 4-/8-bit model (bitsandbytes) cannot be moved: it is
released after use and loaded again next time. ``keep_loaded`` keeps either on the device.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..offload import CPU, visiting
from ..settings.devices import release_cached_memory

QUANTIZATIONS = (None, "4bit", "8bit")


@dataclass
class GenerationOptions:
    """Sampling settings: ``temperature`` 0 is greedy; a ``seed`` makes sampling repeatable."""

    temperature: float
    max_new_tokens: int
    seed: int | None = None
    top_k: int | None = None
    top_p: float | None = None


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def quantization_kwargs(quantize: str | None, device: torch.device, compute_dtype: torch.dtype) -> dict:
    """``from_pretrained`` arguments for 4-/8-bit loading, after checking that it can work here."""
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize={quantize!r}: expected one of None, '4bit', '8bit'")
    if quantize is None:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(f"{quantize} loading needs the bitsandbytes package: pip install bitsandbytes")
    if device.type != "cuda":
        raise InputError(f"{quantize} loading (bitsandbytes) needs a CUDA device; the device is {device}")
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":  # the official --load-4bit settings
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype,
                                    bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": device}}


class LocalModel:
    """Owns a transformers model and moves (or releases) it around each use; see the module docstring.

    ``load()`` builds the model: on the CPU when not quantized, on ``device`` when quantized.
    ``make_room(bytes)`` is called before the weights go to a GPU, so that a host (ComfyUI) can evict
    its own models first.
    """

    def __init__(self, load: Callable[[], torch.nn.Module], device: torch.device, quantized: bool,
                 keep_loaded: bool, make_room: Callable[[int], None] | None = None):
        self._load = load
        self.device = device
        self.quantized = quantized
        self.keep_loaded = keep_loaded
        self.make_room = make_room
        self._model: torch.nn.Module | None = load()
        self.size = sum(t.numel() * t.element_size() for t in self._model.state_dict().values())

    @contextmanager
    def use(self) -> Iterator[torch.nn.Module]:
        """The model on the compute device for the duration of the block."""
        if self.quantized:  # loaded straight onto the device; it cannot move, so it is released after use
            if self._model is None:
                if self.make_room is not None:
                    self.make_room(self.size)
                self._model = self._load()
            try:
                yield self._model
            finally:
                if not self.keep_loaded:
                    self.offload()
            return
        if self._model is None:
            self._model = self._load()
        with visiting(self._model, self.device, None if self.keep_loaded else CPU, self.make_room):
            yield self._model

    def offload(self) -> None:
        """Leave the compute device: back to the CPU, or released when quantized."""
        if self._model is None:
            return
        if self.quantized:
            self._model = None
        elif self.device.type != "cpu":
            self._model.to("cpu")
        release_cached_memory(self.device)

    def release(self) -> None:
        """Drop the weights entirely (the next use loads them again)."""
        self._model = None
        self.offload()


def generate(model: torch.nn.Module, options: GenerationOptions, **inputs) -> torch.Tensor:
    """``model.generate`` with our sampling options; seeded sampling does not disturb the global RNG."""
    kwargs: dict = {"max_new_tokens": options.max_new_tokens, "num_beams": 1, "use_cache": True}
    if options.temperature > 0:
        kwargs.update(do_sample=True, temperature=options.temperature)
        if options.top_k is not None:
            kwargs["top_k"] = options.top_k
        if options.top_p is not None:
            kwargs["top_p"] = options.top_p
    else:
        kwargs["do_sample"] = False
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if options.seed is not None:
            torch.manual_seed(options.seed)
        with torch.inference_mode():
            return model.generate(**inputs, **kwargs)
