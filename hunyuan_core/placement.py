"""Where each component of a pipeline computes and where it rests: the offload modes and the device map.

- ``offload=None``: every component stays on its compute device.
- ``"model"``: a component visits its device only for its stage (text encoders while encoding, the DiT while
  sampling, the VAE while decoding) and rests in CPU memory, pinned when the device is CUDA.
- ``"blocks"``: as ``"model"``, and the DiT's and mT5's blocks stream through :mod:`hunyuan_core.streaming`
  (``resident_blocks`` at a time); only their other weights (embedders, pooler, final layer, embedding table)
  visit for the whole stage.

``devices`` maps ``text_encoder``, ``dit`` and ``vae`` to their compute devices (the device map); tensors cross
where the stages meet. Every move is reported to one :class:`Residency` per device.

Networks a call brings along (its ControlNets, the IP-Adapter's image encoder) are placed as guests of a stage:
on its device, resting and streaming as the components do in the same mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from .errors import InputError
from .offload import CPU, RestingWeights, modules_of, weight_bytes
from .residency import Residency
from .settings.devices import release_cached_memory, resolve_device
from .streaming import BlockStream

COMPONENTS = ("text_encoder", "dit", "vae")
OFFLOAD_MODES = (None, "model", "blocks")


def resolve_devices(device: str | torch.device | None,
                    device_map: Mapping[str, str | torch.device] | None) -> dict[str, torch.device]:
    """One compute device per component: ``device_map``'s entries, ``device`` (resolved) for the others."""
    if device_map is not None and not isinstance(device_map, Mapping):
        raise InputError(f"device_map must map components to devices, e.g. {{'dit': 'cuda:0'}}; got {device_map!r:.80}")
    unknown = sorted(set(device_map or {}) - set(COMPONENTS))
    if unknown:
        raise InputError(f"device_map names unknown components {unknown}; expected some of {', '.join(COMPONENTS)}")
    default = resolve_device(device)
    return {name: resolve_device((device_map or {}).get(name, default)) for name in COMPONENTS}


def _all_modules(obj: object) -> list[nn.Module]:
    return [m for module in modules_of(obj) for m in module.modules()]


def _streamed_blocks(component: object) -> list[tuple[str, nn.ModuleList]]:
    """The block lists that stream in ``"blocks"`` mode: the DiT's ``blocks``, mT5's ``encoder.block``."""
    found = []
    for module in modules_of(component):
        for path in ("blocks", "encoder.block"):
            try:
                blocks = module.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(blocks, nn.ModuleList) and len(blocks):
                found.append((path, blocks))
    return found


class _Visitor:
    """One unit's offloaded weights: the whole-unit weights resting on ``rest`` (pinned when they visit a CUDA
    device) and, in ``"blocks"`` mode, its streamed block lists; the modules it was made for are kept so a unit
    whose modules changed (an IP-Adapter attached) is noticed."""

    def __init__(self, unit: str, obj: object, device: torch.device, residency: Residency, offload: str,
                 resident_blocks: int, rest: torch.device):
        self.unit, self.device, self.residency = unit, device, residency
        for module in modules_of(obj):
            module.to(rest)
        self.modules = _all_modules(obj)
        pin = device.type == "cuda" and rest.type == "cpu"
        lists = _streamed_blocks(obj) if offload == "blocks" else []
        self.streams = [BlockStream(blocks, device, residency, f"{unit}.{path}", resident_blocks, pin)
                        for path, blocks in lists]
        self.weights = RestingWeights(modules_of(obj), exclude=tuple(b for _, b in lists), pin=pin)

    def fits(self, obj: object) -> bool:
        """Whether ``obj`` still has exactly the modules this visitor was made for."""
        current = _all_modules(obj)
        return len(current) == len(self.modules) and all(a is b for a, b in zip(current, self.modules))

    def arrive(self) -> None:
        self.residency.arrive(self.unit, self.weights.nbytes)
        self.weights.arrive(self.device)

    def leave(self) -> None:
        for stream in self.streams:
            stream.leave_all()
        self.weights.leave()
        self.residency.leave(self.unit)
        if self.device.type != "cpu":  # a garbage collection costs seconds; the CPU has no cache to return
            release_cached_memory(self.device)

    def close(self) -> None:
        """Remove the block hooks (the unit is placed anew, or was a guest of one stage)."""
        for stream in self.streams:
            stream.close()


class Placement:
    """The placement of one pipeline's ``components`` (name -> DiT, text encoder, VAE) in an offload mode.

    :meth:`visit` wraps a component's stage, :meth:`guest` a network that joins a stage for one call. ``rest``
    is where offloaded weights rest (the CPU; the bench uses the meta device to count moves of full-size models
    it cannot hold).
    """

    def __init__(self, components: Mapping[str, object], devices: Mapping[str, torch.device],
                 offload: str | None = None, resident_blocks: int = 2, rest: torch.device = CPU):
        if offload not in OFFLOAD_MODES:
            raise InputError(f"offload must be one of {', '.join(map(str, OFFLOAD_MODES))}; got {offload!r}")
        if isinstance(resident_blocks, bool) or not isinstance(resident_blocks, int) or resident_blocks < 1:
            raise InputError(f"resident_blocks must be a whole number >= 1; got {resident_blocks!r}")
        self.offload, self.devices, self.resident_blocks, self.rest = offload, dict(devices), resident_blocks, rest
        self.residency = {str(d): Residency() for d in self.devices.values()}
        self.components = dict(components)
        self._visitors: dict[str, _Visitor] = {}
        self._depth: dict[str, int] = dict.fromkeys(components, 0)
        for name in self.components:
            self._place(name)

    def _place(self, name: str) -> None:
        component, device = self.components[name], self.devices[name]
        if self.offload is None:
            component.to(device)
            self.residency[str(device)].arrive(name, weight_bytes(component))
        else:
            self._visitors[name] = self._visitor(name, component, device)

    def _visitor(self, unit: str, obj: object, device: torch.device) -> _Visitor:
        return _Visitor(unit, obj, device, self.residency[str(device)], self.offload, self.resident_blocks, self.rest)

    @contextmanager
    def visit(self, name: str) -> Iterator[torch.device]:
        """Run a stage with component ``name`` on its device (re-entrant: an inner visit of the same component
        moves nothing); afterwards an offloaded component rests again, also on an error or interrupt. A
        component whose modules changed since it was placed (an IP-Adapter attached to the DiT) is placed anew
        first, so what it gained visits too."""
        device = self.devices[name]
        visitor = self._visitors.get(name)
        if visitor is None or self._depth[name]:
            self._depth[name] += 1
            try:
                yield device
            finally:
                self._depth[name] -= 1
            return
        if not visitor.fits(self.components[name]):
            visitor.close()
            self._place(name)
            visitor = self._visitors[name]
        visitor.arrive()
        self._depth[name] += 1
        try:
            yield device
        finally:
            self._depth[name] -= 1
            visitor.leave()

    @contextmanager
    def guest(self, unit: str, obj: object, stage: str) -> Iterator[torch.device]:
        """Run a block with ``obj`` (a network the pipeline does not own, e.g. a ControlNet) on the device of
        component ``stage``, placed as that component is: without offload it moves there and stays; otherwise
        it visits for the block only (its blocks streaming in ``"blocks"`` mode) and rests on ``rest`` again
        afterwards, reported to the residency log as ``unit``."""
        device = self.devices[stage]
        if self.offload is None:
            for module in modules_of(obj):
                module.to(device)
            self.residency[str(device)].arrive(unit, weight_bytes(obj))
            yield device
            return
        visitor = self._visitor(unit, obj, device)
        visitor.arrive()
        try:
            yield device
        finally:
            visitor.leave()
            visitor.close()

    def close(self) -> None:
        """Remove the block hooks (before the pipeline is placed anew)."""
        for visitor in self._visitors.values():
            visitor.close()
