"""Reading tensors from disk, safely: safetensors memory-mapped, pickles only as plain tensor data.

Every loader in the package (DiT, text encoders, VAE, upscalers) goes through :func:`read_state_dict`
so that a missing, truncated or malicious file gets the same clear error everywhere.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from .errors import ModelFileError

StateDict = dict[str, torch.Tensor]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def sniff_format(path: str | os.PathLike) -> str:
    """Return ``"safetensors"``, ``"torch-zip"``, ``"torch-legacy"`` or ``"unknown"`` from the file's first bytes."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    return "unknown"


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelFileError(f"{what} not found: '{path}' does not exist")
    if path.is_dir():
        raise ModelFileError(f"{what}: expected a file but '{path}' is a folder")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{what}: '{path}' is empty (0 bytes); the download or copy did not finish")


def _read_safetensors(path: Path, what: str) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    size = path.stat().st_size
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{what}: '{path}' has a corrupt safetensors header ({exc})") from None
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + data_end > size:
        raise ModelFileError(
            f"{what}: '{path}' is truncated: its header describes {8 + header_len + data_end:,} bytes "
            f"but the file has {size:,}; download it again"
        )
    try:
        out: StateDict = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                out[key] = f.get_tensor(key)
        return out
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ModelFileError(f"{what}: could not read safetensors file '{path}': {exc}") from None


def _read_pickle(path: Path, what: str, fmt: str) -> object:
    if fmt == "torch-zip":
        try:
            with zipfile.ZipFile(path) as zf:
                zf.namelist()
        except zipfile.BadZipFile:
            raise ModelFileError(
                f"{what}: '{path}' looks like a PyTorch checkpoint but is truncated or corrupt "
                "(its zip directory is missing); download it again"
            ) from None
    try:
        # weights_only=True: plain tensors and containers only; anything that would run code is refused.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=(fmt == "torch-zip"))
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{what}: refused to load '{path}': it holds Python objects other than tensors, which could run "
            f"code when unpickled ({first}). Only plain weight files are accepted; convert it to .safetensors "
            "with a tool you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{what}: '{path}' is truncated or not a PyTorch checkpoint ({exc})") from None


def read_checkpoint(path: str | os.PathLike, what: str = "model file") -> object:
    """Load a weights file as it is stored: a tensor dict for safetensors, any tensor-only container for pickles."""
    path = Path(path)
    _check_exists(path, what)
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return _read_safetensors(path, what)
    if fmt in ("torch-zip", "torch-legacy"):
        return _read_pickle(path, what, fmt)
    if path.suffix.lower() == ".safetensors":
        raise ModelFileError(f"{what}: '{path}' is not a valid safetensors file (bad header); download it again")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelFileError(f"{what}: '{path}' is truncated or not a PyTorch checkpoint (unrecognised first bytes)")
    raise ModelFileError(
        f"{what}: '{path}' is neither a .safetensors file nor a PyTorch checkpoint (.pt/.pth/.bin/.ckpt)"
    )


def is_state_dict(obj: object) -> bool:
    """True when ``obj`` is a non-empty mapping of names to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: object, containers: Iterable[str], where: str = "checkpoint") -> StateDict:
    """Return the tensor dict inside ``obj``, looking through the named container keys in order.

    Training tools wrap weights (DeepSpeed ``{"module": ..., "ema": ...}``, Lightning ``{"state_dict": ...}``,
    Real-ESRGAN ``{"params_ema": ...}``); the order of ``containers`` says which one wins when several exist.
    Non-tensor entries next to the weights (step counters, epoch numbers) are dropped.
    """
    if isinstance(obj, Mapping):
        for key in containers:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return unwrap_state_dict(inner, containers, where)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        found = ", ".join(sorted(map(str, obj.keys()))[:8])
        raise ModelFileError(
            f"{where}: expected a dictionary of weight tensors (or one wrapped under "
            f"{', '.join(repr(c) for c in containers)}); found only non-tensor entries: {found}"
        )
    raise ModelFileError(f"{where}: expected a dictionary of weight tensors; found a {type(obj).__name__}")


def read_state_dict(
    path: str | os.PathLike, containers: Iterable[str] = (), what: str = "model file"
) -> StateDict:
    """Read a weights file and unwrap it to a flat ``{name: tensor}`` dict (CPU, memory-mapped where possible)."""
    return unwrap_state_dict(read_checkpoint(path, what), tuple(containers), f"{what} '{path}'")


def _folder_shards(folder: Path, keep: Callable[[str], bool]) -> list[Path]:
    for ext in (".safetensors", ".bin"):
        index = sorted(folder.glob(f"*{ext}.index.json"))
        if index:
            try:
                weight_map = json.loads(index[0].read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ModelFileError(f"'{index[0]}' is not a valid shard index ({exc})") from None
            return [folder / name for name in sorted({f for k, f in weight_map.items() if keep(k)})]
        files = sorted(p for p in folder.glob(f"*{ext}") if p.is_file())
        plain = [p for p in files if p.name.count(".") == 1]  # drop variants such as *.fp16.safetensors
        if plain or files:
            return plain or files[:1]
    return []


def read_folder_state_dict(
    folder: str | os.PathLike, what: str = "model folder", keep: Callable[[str], bool] = lambda key: True
) -> StateDict:
    """Read the weights of a Hugging Face style folder (``*.safetensors``, else ``*.bin``; sharded or not).

    Only keys ``keep`` accepts are returned, and shards holding none of them are not opened (the official
    mT5 folder is a full encoder-decoder of which only the encoder is needed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"{what} not found: '{folder}' is not a folder")
    shards = _folder_shards(folder, keep)
    if not shards:
        listing = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ModelFileError(
            f"{what}: no weights in '{folder}' (expected *.safetensors or *.bin weights); found: {listing}"
        )
    out: StateDict = {}
    for shard in shards:
        out.update((k, v) for k, v in read_state_dict(shard, what=what).items() if keep(k))
    return out
