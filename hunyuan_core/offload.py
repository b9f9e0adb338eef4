"""A model visits the compute device only while it works, and rests elsewhere (usually the CPU) in between.

One mechanism for every host: the pipeline's callers, the rewriter's local LLM and the ComfyUI nodes (which pass
ComfyUI's own make-room and cache-release functions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .settings.devices import release_cached_memory

CPU = torch.device("cpu")


def modules_of(obj: object) -> list[torch.nn.Module]:
    """A module, or the modules an object carries (each once: an object may hold one module under two names)."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    found = {id(v): v for v in vars(obj).values() if isinstance(v, torch.nn.Module)}
    return list(found.values())


def weight_bytes(obj: object) -> int:
    """Bytes of parameters and buffers held by a module, or by the modules an object carries (what moving it
    to a GPU needs)."""
    tensors = [t for m in modules_of(obj) for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors)


def weight_device(obj: object) -> torch.device:
    """The device of the first weight of a module, or of the modules an object carries (CPU when it has none)."""
    for module in modules_of(obj):
        for p in module.parameters():
            return p.device
    return CPU


@contextmanager
def visiting(
    obj: object,
    device: torch.device,
    rest: torch.device | None = None,
    make_room: Callable[[int], None] | None = None,
    release: Callable[[torch.device], None] = release_cached_memory,
) -> Iterator[torch.device]:
    """Run a block with ``obj`` (a module, or an object with modules and a ``to()``) on ``device``.

    ``make_room(bytes)`` is called before it moves there, so a host can evict its own models first. Afterwards
    it goes to ``rest`` (None: it stays); on an error or interrupt it always leaves ``device`` (for ``rest``, or
    the CPU), so a stopped run holds nothing. ``release(device)`` returns cached memory whenever it left.
    """
    if weight_device(obj) != device:
        if make_room is not None:
            make_room(weight_bytes(obj))
        obj.to(device)
    try:
        yield device
    except BaseException:
        obj.to(rest or CPU)
        release(device)
        raise
    if rest is not None and rest != device:
        obj.to(rest)
        release(device)


class RestingWeights:
    """The weights of some modules, resting in CPU memory (pinned when they will visit a CUDA device), with a
    copy on the compute device only between :meth:`arrive` and :meth:`leave`.

    The rest copies are the weights: leaving drops the device copy and copies nothing back, so a weight changed
    at rest (a merged LoRA) is what the next visit brings. ``exclude`` holds modules whose weights are not part
    of this unit (the blocks that stream on their own).
    """

    def __init__(self, modules: list[torch.nn.Module], exclude: tuple[torch.nn.Module, ...] = (), pin: bool = False):
        skipped = {id(t) for m in exclude for t in (*m.parameters(), *m.buffers())}
        seen: set[int] = set()
        self.slots: list[tuple[torch.nn.Module, str, str]] = []  # (owner, "_parameters" or "_buffers", name)
        for module in modules:
            for owner in module.modules():
                for kind in ("_parameters", "_buffers"):
                    for name, t in getattr(owner, kind).items():
                        if t is not None and id(t) not in seen and id(t) not in skipped:
                            seen.add(id(t))
                            self.slots.append((owner, kind, name))
        self.nbytes = sum(t.numel() * t.element_size() for t in self._tensors())
        self._rest: list[torch.Tensor] | None = None
        if pin:
            for slot in self.slots:
                self._set(slot, self._get(slot).pin_memory())

    @staticmethod
    def _get(slot: tuple[torch.nn.Module, str, str]) -> torch.Tensor:
        owner, kind, name = slot
        t = getattr(owner, kind)[name]
        return t.data if kind == "_parameters" else t

    @staticmethod
    def _set(slot: tuple[torch.nn.Module, str, str], value: torch.Tensor) -> None:
        owner, kind, name = slot
        if kind == "_parameters":
            owner._parameters[name].data = value
        else:
            owner._buffers[name] = value

    def _tensors(self) -> list[torch.Tensor]:
        return [self._get(slot) for slot in self.slots]

    @property
    def visiting(self) -> bool:
        return self._rest is not None

    def arrive(self, device: torch.device) -> list[torch.Tensor]:
        """Copy the weights to ``device`` (asynchronously from pinned memory, on the current stream) and use the
        copies; returns them (a side-stream caller marks them for the stream that computes)."""
        if self._rest is not None:
            return []
        self._rest = self._tensors()
        copies = [t.to(device, non_blocking=True) for t in self._rest]
        for slot, copy in zip(self.slots, copies):
            self._set(slot, copy)
        return copies

    def leave(self) -> None:
        """Use the rest copies again; the device copies are freed once nothing computes with them."""
        if self._rest is None:
            return
        for slot, rest in zip(self.slots, self._rest):
            self._set(slot, rest)
        self._rest = None
