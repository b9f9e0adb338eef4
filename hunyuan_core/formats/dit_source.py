"""Where a loaded DiT's weights lie on disk, so that some of them can be read again later.

Undoing a LoRA merge reads the original weights back from the model file instead of keeping a copy of them in
memory (a file of any layout the DiT loads from: the read is memory-mapped for safetensors and zip-format
``.pt``, so only the tensors asked for are touched). The file is identified by its size and modification time:
once it changes on disk it is no longer a source of the loaded weights.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .keys import diffusers_to_official, is_diffusers_dit, official_to_diffusers, strip_dit_prefix
from .layouts import read_dit_weights
from .model_files import ModelFiles


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the file, or of every file of a folder."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files)


@dataclass(frozen=True)
class DiTWeightsFile:
    """The DiT weights file (or diffusers ``transformer/`` folder) a DiT was loaded from."""

    files: ModelFiles  # without the file content, which is read again on demand
    variant: str | None
    stamp: tuple[tuple[str, int, int], ...]

    @classmethod
    def of(cls, files: ModelFiles, variant: str | None) -> DiTWeightsFile:
        return cls(replace(files, checkpoint=None), variant, _stamp(files.dit))

    def unchanged(self) -> bool:
        """True while the file on disk is the one the weights were read from."""
        try:
            return _stamp(self.files.dit) == self.stamp
        except OSError:
            return False

    def read(self, shapes: dict[str, torch.Size]) -> Iterator[tuple[str, torch.Tensor]]:
        """The tensors ``shapes`` names (official names -> their shapes in the model) as stored in the file, one at
        a time: the file is opened once (memory-mapped where the format allows) and each tensor made when its turn
        comes, so a diffusers ``Wqkv`` (three tensors joined) costs one layer at a time."""
        stored = strip_dit_prefix(read_dit_weights(self.files, self.variant))
        diffusers = is_diffusers_dit(stored)
        for name, shape in shapes.items():
            if diffusers:
                yield from diffusers_to_official({k: stored[k] for k in _diffusers_names(name, shape)}).items()
            else:
                yield name, stored[name]


def _diffusers_names(name: str, shape: torch.Size) -> Collection[str]:
    """The diffusers tensors an official tensor is made from (``Wqkv`` from three)."""
    return official_to_diffusers({name: torch.empty(shape, device="meta")}).keys()


def dit_weights_file(files: ModelFiles, variant: str | None) -> DiTWeightsFile | None:
    """The source to record on a DiT loaded from ``files``; None when the files cannot be identified."""
    try:
        return DiTWeightsFile.of(files, variant)
    except OSError:
        return None

