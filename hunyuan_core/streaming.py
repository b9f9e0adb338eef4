"""Block streaming: the blocks of a transformer (the DiT's 40, mT5's 24) visit the compute device a window at a
time, the next block's copy overlapping the current block's compute on a side CUDA stream.

A block is needed whenever any of its modules runs (its forward, or the DiT's text K/V projections that run
once per image), so the model code does not know it is streamed. Moves are copies, never casts: the outputs
are those of the resident model, bit for bit.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .offload import RestingWeights
from .residency import Residency


class BlockStream:
    """Keep at most ``resident`` consecutive blocks of ``blocks`` on ``device`` (the one computing and the
    ones after it, wrapping around for the next step); each move is reported to ``residency`` as
    ``f"{name}.{i}"``. :meth:`close` sends all of them back and removes the hooks."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device, residency: Residency, name: str,
                 resident: int = 2, pin: bool = False):
        if resident < 1:
            raise ValueError(f"resident blocks must be at least 1; got {resident}")
        self.device, self.residency, self.name = device, residency, name
        self.resident = min(resident, len(blocks))
        self.weights = [RestingWeights([block], pin=pin) for block in blocks]
        self.present: list[int] = []
        self._copied: dict[int, tuple[torch.cuda.Event, list[torch.Tensor]]] = {}
        self._side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._hooks = [m.register_forward_pre_hook(partial(self._need, i))
                       for i, block in enumerate(blocks) for m in block.modules()]

    def _fetch(self, i: int, ahead: bool) -> None:
        self.residency.arrive(f"{self.name}.{i}", self.weights[i].nbytes)
        self.present.append(i)
        if self._side is None or not ahead:
            self.weights[i].arrive(self.device)
            return
        with torch.cuda.stream(self._side):
            copies = self.weights[i].arrive(self.device)
            event = torch.cuda.Event()
            event.record()
        self._copied[i] = (event, copies)

    def _evict(self, i: int) -> None:
        self.weights[i].leave()
        self._copied.pop(i, None)
        self.present.remove(i)
        self.residency.leave(f"{self.name}.{i}")

    def _need(self, i: int, _module: nn.Module, _args: tuple) -> None:
        if self.present and self.present[0] == i and i not in self._copied:
            return  # the computing block, ready
        window = [(i + k) % len(self.weights) for k in range(self.resident)]
        for j in [j for j in self.present if j not in window]:
            self._evict(j)
        if i not in self.present:
            self._fetch(i, ahead=False)
        if i in self._copied:  # copied on the side stream: compute waits for it, and owns its memory
            event, copies = self._copied.pop(i)
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for t in copies:
                t.record_stream(stream)
        self.present.sort(key=window.index)
        for j in window[1:]:
            if j not in self.present:
                self._fetch(j, ahead=True)

    def leave_all(self) -> None:
        """Every block back to rest (the end of the component's stage)."""
        for i in list(self.present):
            self._evict(i)

    def close(self) -> None:
        self.leave_all()
        for hook in self._hooks:
            hook.remove()
