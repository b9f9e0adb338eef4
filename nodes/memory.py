"""Our models under ComfyUI's model management: one mechanism for the DiT, the text encoders, the VAE, the
upscalers and the adapters' networks.

Inside ComfyUI each model gets one ``comfy.model_patcher.ModelPatcher`` the first time a node uses it (kept on
the model itself, so every handle and branch of a graph shares it) and is loaded with
``comfy.model_management.load_models_gpu`` before each use. ComfyUI then decides where it rests: it stays on
the GPU between runs while there is room, leaves it for ``unload_all_models()`` / ``POST /free``, and is
(partly) unloaded when another model needs the room; ``--highvram``/``--gpu-only``/``--reserve-vram`` apply as
for its own models. The pack never moves a model back itself.

Whole loads: ComfyUI's partial (``--lowvram``) loading streams weights to the GPU per call only for its own
``comfy.ops`` layers; any other layer it has no room for stays on the CPU. Our networks are plain torch
layers and the core runs on the device of their weights, so a partial load would split a network across
devices. We therefore ask ComfyUI for whole loads (``force_full_load``): it evicts other models until ours
fits. With ``--novram`` ComfyUI loads nothing at all and our models run whole on the CPU.

Our LoRAs are merged into the weights by the core (``apply_loras``), never as ComfyUI patches: a patcher
without patches keeps no weight backups, so unloading or reloading never restores weights over a merge.

Outside ComfyUI (scripts, tests) a model visits the compute device only while it works
(:func:`hunyuan_core.offload.visiting`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import cache
from typing import Any

import torch

from hunyuan_core.offload import CPU, modules_of, visiting, weight_bytes

from . import host

PATCHER_ATTRIBUTE = "comfy_model_patcher"


class ManagedWeights(torch.nn.Module):
    """What ComfyUI manages for one of our models: its modules as children (ComfyUI moves, counts and marks
    this container, never our model's own attributes)."""

    def __init__(self, modules: list[torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)


@cache
def _named_container(name: str) -> type[ManagedWeights]:
    """A :class:`ManagedWeights` subclass named after the model, because ComfyUI's log names what it loads by
    class ("Requested to load HunyuanDiT")."""
    return type(name, (ManagedWeights,), {"__doc__": ManagedWeights.__doc__})


def patcher(obj: Any, offload_device: torch.device) -> Any:
    """The ``ModelPatcher`` of ``obj`` (a module, or an object carrying modules): load device ComfyUI's compute
    device, ``offload_device`` where it rests, size the bytes its parameters and buffers take (tied weights once,
    unlike ComfyUI's state-dict count). Made on first use, and made again when the weights changed size (modules
    attached or removed, e.g. an IP-Adapter's): ComfyUI would not move what a loaded model gained. Only inside
    ComfyUI."""
    size = weight_bytes(obj)
    existing = getattr(obj, PATCHER_ATTRIBUTE, None)
    if existing is not None and existing.size == size:
        return existing
    import comfy.model_management
    import comfy.model_patcher

    if existing is not None:
        _forget(comfy.model_management, existing)
    weights = _named_container(type(obj).__name__)(modules_of(obj))
    made = comfy.model_patcher.ModelPatcher(weights, load_device=host.torch_device(), offload_device=offload_device,
                                            size=size)
    setattr(obj, PATCHER_ATTRIBUTE, made)
    return made


def _forget(model_management: Any, old: Any) -> None:
    """Take a patcher out of ComfyUI's loaded models without moving its weights, as ComfyUI does when a clone
    takes over a model's weights: the new patcher's load then finds them already in place."""
    for i, loaded in reversed(list(enumerate(model_management.current_loaded_models))):
        if loaded.model is old:
            model_management.current_loaded_models.pop(i)
            old.detach(unpatch_all=False)
            loaded.model_finalizer.detach()


@contextmanager
def on_compute_device(*models: Any, offload_device: torch.device, memory_required: int = 0) -> Iterator[torch.device]:
    """Run a block with ``models`` (modules, or objects carrying modules) on the compute device; yield that device.

    In ComfyUI: load their patchers together with one ``load_models_gpu`` (so loading one cannot evict another),
    making room for the weights plus ``memory_required`` bytes of work memory, and leave residency to ComfyUI
    afterwards, also after an error or interrupt. Elsewhere: move them there and back to the CPU, always, when
    the block ends.
    """
    if not host.in_comfyui():
        device = host.torch_device()
        with ExitStack() as visits:
            for obj in models:
                visits.enter_context(visiting(obj, device, CPU))
            yield device
        return
    import comfy.model_management

    patchers = [patcher(obj, offload_device) for obj in models]
    comfy.model_management.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
    yield patchers[0].load_device
