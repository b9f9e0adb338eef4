"""Where each component of a pipeline computes and where it rests: the offload modes and the device map.

- ``offload=None``: every component stays on its compute device.
- ``"model"``: a component visits its device only for its stage (text encoders while encoding, the DiT while
  sampling, the VAE while decoding) and rests in CPU memory, pinned when the device is CUDA.
- ``"blocks"``: as ``"model"``, and the DiT's and mT5's blocks stream through :mod:`hunyuan_core.streaming`
  (``resident_blocks`` at a time); only their other weights (embedders, pooler, final layer, embedding table)
  visit for the whole stage.

``devices`` maps ``text_encoder``, ``dit`` and ``vae`` to their compute devices (the device map); tensors cross
where the stages meet. Every move is reported to one :class:`Residency` per device.
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


class Placement:
    """The placement of one pipeline's ``components`` (name -> DiT, text encoder, VAE) in an offload mode.

    :meth:`visit` wraps a component's stage. ``rest`` is where offloaded weights rest (the CPU; the bench uses
    the meta device to count moves of full-size models it cannot hold).
    """

    def __init__(self, components: Mapping[str, object], devices: Mapping[str, torch.device],
                 offload: str | None = None, resident_blocks: int = 2, rest: torch.device = CPU):
        if offload not in OFFLOAD_MODES:
            raise InputError(f"offload must be one of {', '.join(map(str, OFFLOAD_MODES))}; got {offload!r}")
        if isinstance(resident_blocks, bool) or not isinstance(resident_blocks, int) or resident_blocks < 1:
            raise InputError(f"resident_blocks must be a whole number >= 1; got {resident_blocks!r}")
        self.offload, self.devices, self.resident_blocks = offload, dict(devices), resident_blocks
        self.residency = {str(d): Residency() for d in self.devices.values()}
        self._weights: dict[str, RestingWeights] = {}
        self._streams: dict[str, list[BlockStream]] = {}
        self._depth: dict[str, int] = dict.fromkeys(components, 0)
        for name, component in components.items():
            device = self.devices[name]
            if offload is None:
                component.to(device)
                self.residency[str(device)].arrive(name, weight_bytes(component))
                continue
            component.to(rest)
            pin = device.type == "cuda" and rest.type == "cpu"
            lists = _streamed_blocks(component) if offload == "blocks" else []
            self._streams[name] = [BlockStream(blocks, device, self.residency[str(device)], f"{name}.{path}",
                                               resident_blocks, pin) for path, blocks in lists]
            self._weights[name] = RestingWeights(modules_of(component), exclude=tuple(b for _, b in lists), pin=pin)

    @contextmanager
    def visit(self, name: str) -> Iterator[torch.device]:
        """Run a stage with component ``name`` on its device (re-entrant: an inner visit of the same component
        moves nothing); afterwards an offloaded component rests again, also on an error or interrupt."""
        device = self.devices[name]
        weights = self._weights.get(name)
        if weights is None or self._depth[name]:
            self._depth[name] += 1
            try:
                yield device
            finally:
                self._depth[name] -= 1
            return
        residency = self.residency[str(device)]
        residency.arrive(name, weights.nbytes)
        weights.arrive(device)
        self._depth[name] += 1
        try:
            yield device
        finally:
            self._depth[name] -= 1
            for stream in self._streams[name]:
                stream.leave_all()
            weights.leave()
            residency.leave(name)
            if device.type != "cpu":  # a garbage collection costs seconds; the CPU has no cache to return
                release_cached_memory(device)

    def close(self) -> None:
        """Remove the block hooks (before the pipeline is placed anew)."""
        for streams in self._streams.values():
            for stream in streams:
                stream.close()
