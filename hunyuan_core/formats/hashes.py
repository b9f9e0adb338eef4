"""Short content hashes of weight files, as image sites and A1111-style metadata name models and LoRAs.

A hash is the first 10 hex digits of the SHA-256 of the file's bytes (A1111's "AutoV2", which civitai
shows for every file), so a picture's "Model hash" finds the file on those sites. A safetensors header may
carry a hash of its own (``modelspec.hash_sha256``), but that covers what its writer chose to hash, not the
file, so it is not used. Hashing reads the whole file (about 1-2 s per GB); each file is hashed once per
process, cached by (path, size, modification time), so a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from .files import reading
from .layouts import find_model_files

SHORT_HASH = 10  # hex digits, A1111's AutoV2 length
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_CHUNK = 1 << 24

_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """Full SHA-256 hex of a file, cached by (resolved path, size, mtime)."""
    path = Path(path).expanduser().resolve()
    with reading(path, "hashing"):
        info = path.stat()
        key = (str(path), info.st_size, info.st_mtime_ns)
        with _lock:
            if key in _cache:
                return _cache[key]
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
    with _lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def weights_hash(path: str | os.PathLike) -> str:
    """Short hash of a weights file, or of a folder's weight files (their hashes combined in name order,
    e.g. a PEFT LoRA folder or diffusers shards)."""
    path = Path(path).expanduser()
    if path.is_file():
        return file_sha256(path)[:SHORT_HASH]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    combined = hashlib.sha256("".join(f"{p.relative_to(path).as_posix()}:{file_sha256(p)}\n" for p in files).encode())
    return combined.hexdigest()[:SHORT_HASH]


def model_hash(path: str | os.PathLike, variant: str | None = None) -> str:
    """Short hash of the DiT weights a model path loads (the file itself for a single file; the chosen
    official weight file, or the diffusers ``transformer/`` shards, for a folder). The text encoders and
    VAE are the release's stock ones and are left out, so one release's layouts differ only by their files."""
    path = Path(path).expanduser()
    if path.is_file():
        return weights_hash(path)
    return weights_hash(find_model_files(path, variant).dit)
