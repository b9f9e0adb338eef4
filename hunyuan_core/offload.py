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
