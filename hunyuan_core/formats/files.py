"""Reading tensors from disk, safely: safetensors memory-mapped, pickles only as plain tensor data.

Every loader in the package (DiT, text encoders, VAE, upscalers) goes through :func:`read_state_dict`
so that a missing, truncated, unreadable or malicious file gets the same clear error everywhere. A
safetensors header is untrusted input: it is parsed once, here, and every entry is checked (dtype, shape,
byte range inside the file, no overlaps) before a tensor is made from the memory-mapped file. Paths that a
model's own files name (shard indexes, tokenizer configs) are confined to the model's folder, and
:func:`offline` keeps the hub switched off while diffusers/transformers read local files.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..errors import ModelFileError

StateDict = dict[str, torch.Tensor]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_MAX_HEADER = 100_000_000  # bytes; the format's own limit
# safetensors dtype names -> torch dtypes (the unsigned wide ones exist from torch 2.3 on)
_SAFETENSORS_DTYPES = {
    name: dtype
    for name, dtype in {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
        "C64": torch.complex64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
        "U64": getattr(torch, "uint64", None), "U32": getattr(torch, "uint32", None),
        "U16": getattr(torch, "uint16", None), "U8": torch.uint8, "BOOL": torch.bool,
    }.items()
    if dtype is not None
}


@contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn an OS error while reading ``path`` or a file in it (permission denied, I/O error) into a ModelFileError
    naming the file."""
    try:
        yield
    except OSError as exc:
        raise ModelFileError(f"{what}: cannot read '{exc.filename or path}': {exc.strerror or exc}") from None


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
        if head[8:9] == b"{" and 0 < header_len < SAFETENSORS_MAX_HEADER:
            return "safetensors"
    return "unknown"


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelFileError(f"{what} not found: '{path}' does not exist")
    if path.is_dir():
        raise ModelFileError(f"{what}: expected a file but '{path}' is a folder")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{what}: '{path}' is empty (0 bytes); the download or copy did not finish")


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: hostile headers hold megabyte-long names."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: dtype, shape and byte range ``[begin, end)`` after the header."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header: every entry is well formed, inside the file and overlaps no other."""

    size: int  # of the whole file
    data_start: int  # offset of the data buffer (8 + header length)
    tensors: dict[str, TensorEntry]


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {_short(next(k for k in keys if keys.count(k) > 1))}")
    return dict(pairs)


def _tensor_entry(name: str, info: object, bad: str) -> TensorEntry:
    if not isinstance(info, dict):
        raise ModelFileError(f"{bad}: entry {_short(name)} is {_short(info)}; expected an object with "
                             "dtype, shape and data_offsets")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise ModelFileError(f"{bad}: entry {_short(name)} lacks {', '.join(missing)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
        raise ModelFileError(f"{bad}: tensor {_short(name)} has dtype {_short(dtype)}; expected one of "
                             f"{', '.join(_SAFETENSORS_DTYPES)}")
    if not isinstance(shape, list) or not all(map(_is_count, shape)):
        raise ModelFileError(f"{bad}: tensor {_short(name)} has shape {_short(shape)}; expected a list of "
                             "non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise ModelFileError(f"{bad}: tensor {_short(name)} has data_offsets {_short(offsets)}; expected "
                             "[begin, end] with 0 <= begin <= end")
    torch_dtype = _SAFETENSORS_DTYPES[dtype]
    needed = math.prod(shape) * torch_dtype.itemsize
    if offsets[1] - offsets[0] != needed:
        raise ModelFileError(f"{bad}: tensor {_short(name)} ({dtype} {_short(shape)}) needs {needed:,} bytes but its "
                             f"data_offsets span {offsets[1] - offsets[0]:,}")
    return TensorEntry(torch_dtype, tuple(shape), offsets[0], offsets[1])


def read_safetensors_header(path: str | os.PathLike, what: str = "model file") -> SafetensorsHeader:
    """Parse and check the header of a safetensors file (reads only the header, never the weights).

    Anything malformed (entries that are not objects or lack fields, unknown dtypes, byte ranges that do not
    match the shape, overlap or run past the end of the file, non-UTF-8 or deeply nested JSON, a header
    length beyond the file) raises ModelFileError naming the file and what is wrong.
    """
    path = Path(path)
    bad = f"{what}: '{path}' is not a valid safetensors file"
    with reading(path, what):
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(f"{bad}: {size} bytes is too short for a header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > SAFETENSORS_MAX_HEADER:
                raise ModelFileError(f"{bad}: its header length {header_len:,} exceeds the format's limit of "
                                     f"{SAFETENSORS_MAX_HEADER:,} bytes")
            if 8 + header_len > size:
                raise ModelFileError(f"{what}: '{path}' is truncated: its header alone needs {8 + header_len:,} "
                                     f"bytes but the file has {size:,}; download it again")
            raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{bad}: its header is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ModelFileError(f"{bad}: its header is JSON nested too deeply to be a tensor list") from None
    except ValueError as exc:
        raise ModelFileError(f"{bad}: its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{bad}: its header is {_short(header)}; expected an object of tensors")
    if not isinstance(header.get("__metadata__", {}), dict):
        raise ModelFileError(f"{bad}: its __metadata__ is not an object")
    tensors = {name: _tensor_entry(name, info, bad) for name, info in header.items() if name != "__metadata__"}
    data_start = 8 + header_len
    data_end = max((e.end for e in tensors.values()), default=0)
    if data_start + data_end > size:
        raise ModelFileError(
            f"{what}: '{path}' is truncated: its header describes {data_start + data_end:,} bytes "
            f"but the file has {size:,}; download it again"
        )
    spans = sorted((e.begin, e.end, name) for name, e in tensors.items() if e.end > e.begin)
    for (_, end0, name0), (begin1, _, name1) in zip(spans, spans[1:]):
        if begin1 < end0:
            raise ModelFileError(f"{bad}: tensors {_short(name0)} and {_short(name1)} overlap (both use bytes "
                                 f"{begin1:,} to {end0:,} of the data)")
    return SafetensorsHeader(size, data_start, tensors)


def _read_safetensors(path: Path, what: str) -> StateDict:
    """Tensors as views of the memory-mapped file (copy-on-write), made only from a checked header."""
    header = read_safetensors_header(path, what)
    with reading(path, what):
        storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=header.size)
    data = torch.empty(0, dtype=torch.uint8).set_(storage)[header.data_start:]
    out: StateDict = {}
    for name, e in header.tensors.items():
        raw = data[e.begin : e.end]
        if raw.storage_offset() % e.dtype.itemsize:  # the format does not promise aligned tensors
            raw = raw.clone()
        out[name] = raw.view(e.dtype).reshape(e.shape)
    return out


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
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as exc:  # torch.load tries safetensors too
        raise ModelFileError(f"{what}: '{path}' is truncated or not a PyTorch checkpoint ({exc})") from None


def read_checkpoint(path: str | os.PathLike, what: str = "model file") -> object:
    """Load a weights file as it is stored: a tensor dict for safetensors, any tensor-only container for pickles."""
    path = Path(path)
    with reading(path, what):
        _check_exists(path, what)
        fmt = sniff_format(path)
    if fmt == "safetensors" or (fmt == "unknown" and path.suffix.lower() == ".safetensors"):
        return _read_safetensors(path, what)  # an unknown start gets the header check's precise reason
    if fmt in ("torch-zip", "torch-legacy"):
        return _read_pickle(path, what, fmt)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelFileError(f"{what}: '{path}' is truncated or not a PyTorch checkpoint (unrecognised first bytes)")
    raise ModelFileError(
        f"{what}: '{path}' is neither a .safetensors file nor a PyTorch checkpoint (.pt/.pth/.bin/.ckpt)"
    )


def unwrap_state_dict(obj: object, containers: Iterable[str], where: str = "checkpoint") -> StateDict:
    """Return the tensor dict inside ``obj``, looking through the named container keys in order.

    Training tools wrap weights (DeepSpeed ``{"module": ..., "ema": ...}``, Lightning ``{"state_dict": ...}``,
    Real-ESRGAN ``{"params_ema": ...}``); the order of ``containers`` says which one wins when several exist.
    Non-tensor entries next to the weights (step counters, epoch numbers) are dropped; a dict whose tensors
    are all empty (saved without data) is refused.
    """
    if isinstance(obj, Mapping):
        for key in containers:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return unwrap_state_dict(inner, containers, where)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and all(t.numel() == 0 for t in tensors.values()):
            raise ModelFileError(f"{where}: all {len(tensors)} weight tensors are empty (0 values each); expected "
                                 "weights with data")
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


def tensor_shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int, where: str) -> tuple[int, ...]:
    """The shape of ``sd[key]``, which must exist and have ``ndim`` non-zero dimensions: architecture is read
    off shapes, so a wrong one must be a ModelFileError naming the tensor, not an unpacking error."""
    if key not in sd:
        raise ModelFileError(f"{where}: expected a tensor '{key}'; found {len(sd)} tensors such as "
                             f"{', '.join(list(sd)[:4]) or 'none'}")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim or 0 in shape:
        raise ModelFileError(f"{where}: tensor '{key}' has shape {list(shape)}; expected {ndim} non-zero dimensions")
    return shape


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """A JSON file that must hold an object (a config, a shard index, a tokenizer config).

    diffusers and transformers read a config that is a string as a hub repo id and go online for it, so
    nothing but an object read this way may reach them.
    """
    path = Path(path)
    with reading(path, what):
        raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ModelFileError(f"{what}: '{path}' is JSON nested too deeply") from None
    except ValueError as exc:  # includes bytes that are not UTF-8/16/32
        raise ModelFileError(f"{what}: '{path}' is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{what}: '{path}' must hold a JSON object; found {_short(data)}")
    return data


def confined(folder: str | os.PathLike, name: object, where: str) -> Path:
    """``folder / name`` for a file name that a model's own files give (a shard in an index, a tokenizer file),
    refused unless it stays inside ``folder``.

    The name is checked, not the target of symlinks: the Hugging Face cache links every file of a
    snapshot folder to a blob outside it, and those folders must load.
    """
    if not stays_inside(name):
        raise ModelFileError(f"{where}: names the file {_short(name)}, which is not inside '{folder}'; a model may "
                             "only refer to files in its own folder")
    return Path(folder) / name


def stays_inside(name: object) -> bool:
    """Whether ``name`` is a relative file name that cannot leave the folder it is relative to."""
    rel = Path(name) if isinstance(name, str) else None
    return rel is not None and bool(rel.parts) and not rel.is_absolute() and not rel.drive and ".." not in rel.parts


def _index_shards(index: Path, folder: Path, keep: Callable[[str], bool]) -> list[Path]:
    where = f"shard index '{index}'"
    weight_map = read_json_object(index, "shard index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ModelFileError(f"{where}: expected \"weight_map\": an object of tensor name -> shard file; found "
                             f"{_short(weight_map)}")
    return sorted({confined(folder, name, where) for key, name in weight_map.items() if keep(key)})


def _folder_shards(folder: Path, keep: Callable[[str], bool]) -> list[Path]:
    for ext in (".safetensors", ".bin"):
        index = sorted(folder.glob(f"*{ext}.index.json"))
        if index:
            return _index_shards(index[0], folder, keep)
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
    with reading(folder, what):
        shards = _folder_shards(folder, keep)
        listing = "" if shards else ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    if not shards:
        raise ModelFileError(
            f"{what}: no weights in '{folder}' (expected *.safetensors or *.bin weights); found: {listing}"
        )
    out: StateDict = {}
    for shard in shards:
        out.update((k, v) for k, v in read_state_dict(shard, what=what).items() if keep(k))
    return out


_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_offline_lock = threading.Lock()
_offline_state: dict = {"depth": 0}


@contextmanager
def offline() -> Iterator[None]:
    """Switch the Hugging Face hub off while diffusers/transformers read local files, so that no input can
    make them send a request: the ``*_OFFLINE`` variables and huggingface_hub's own flag (which its HTTP
    layer checks on every request) are set, and restored when the last user leaves (nesting and threads
    are fine). Import the library before entering: a library imported inside would read the variables at
    import time and stay offline for the rest of the process.
    """
    import huggingface_hub.constants as hub  # imported before the variables are set, for the same reason

    with _offline_lock:
        if _offline_state["depth"] == 0:
            _offline_state["saved"] = ({k: os.environ.get(k) for k in _OFFLINE_VARIABLES}, hub.HF_HUB_OFFLINE)
            os.environ.update(dict.fromkeys(_OFFLINE_VARIABLES, "1"))
            hub.HF_HUB_OFFLINE = True
        _offline_state["depth"] += 1
    try:
        yield
    finally:
        with _offline_lock:
            _offline_state["depth"] -= 1
            if _offline_state["depth"] == 0:
                env, hub.HF_HUB_OFFLINE = _offline_state.pop("saved")
                for key, value in env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
