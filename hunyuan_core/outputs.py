"""Writing the user's files without ever losing one.

Every file the project writes goes through here: the bytes go to a uniquely named temporary file in the
target folder and are renamed into place only once complete (a crash, Ctrl-C or a full disk leaves the old
file whole), an existing file is replaced only when the caller says so, and an output is refused when it is,
holds or lies inside a file being read.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import OutputError

COUNTER_DIGITS = 5  # ComfyUI's SaveImage style: name_00001_.png


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def remove_stale_temps(path: Path) -> int:
    """Remove the temporary files writers of ``path`` left beside it when they were killed (SIGKILL, power loss:
    no ``finally`` ran). Only for a caller that knows no writer of ``path`` is still running. Returns how many."""
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it is renamed to ``path``.

    For writers that want a file name (``torch.save``, ``save_file``, ``PIL.Image.save``). On error the
    temporary file is removed and ``path`` is untouched. With ``overwrite=False`` an existing ``path`` is
    never replaced (the check and the rename are one step where the file system allows hard links).
    """
    path = Path(path)
    ensure_dir(path.parent)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for '{path}'")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _place(tmp, path, overwrite)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder inside ``folder`` for a library that writes several files itself
    (``save_pretrained``); when the block ends without error each file is renamed into ``folder``, one by one,
    like :func:`atomic_path` would. On error nothing reaches ``folder``.
    """
    folder = ensure_dir(folder)
    stage = Path(tempfile.mkdtemp(prefix=".staging.", suffix=".tmp", dir=folder))
    try:
        yield stage
        for src in sorted(p for p in stage.rglob("*") if p.is_file()):
            with open(src, "rb+") as fh:
                os.fsync(fh.fileno())
            dest = folder / src.relative_to(stage)
            ensure_dir(dest.parent)
            os.replace(src, dest)
        _fsync_dir(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: no window between the check and the write
    except FileExistsError:
        raise OutputError(f"'{path}' already exists; not replacing it (pass --overwrite / overwrite=True)") from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        if path.exists():
            raise OutputError(f"'{path}' already exists; not replacing it (pass --overwrite / overwrite=True)") from None
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", overwrite: bool = True,
                encoding: str | None = None) -> Iterator[IO]:
    """``open(path, mode)`` that lands all at once (see :func:`atomic_path`)."""
    if "r" in mode or "a" in mode or "+" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    with atomic_open(path, "w", overwrite=overwrite) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write bytes atomically; returns the path."""
    with atomic_open(path, "wb", overwrite=overwrite) as fh:
        fh.write(data)
    return Path(path)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line of UTF-8 text to a log such as a job manifest, in a single ``write`` on a file opened for
    appending (every process that appends to ``path`` this way lands whole lines, never interleaved bytes),
    flushed to disk before it returns. Never creates ``path`` over a folder or through a missing parent."""
    if "\n" in line:
        raise ValueError("append_line writes one line; the text holds a newline")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def save_new(folder: str | os.PathLike, stem: str, suffix: str, write: Callable[[Path], None],
             overwrite: bool = False) -> Path:
    """Write a new file named ``stem`` + ``suffix`` in ``folder`` and return where it went.

    ``write(tmp_path)`` writes the content. Without ``overwrite`` an existing file is never replaced: the
    name gets ComfyUI's counter (``stem_00001_.png``, ``stem_00002_.png``, ...), the first that is free at
    the moment of the rename, so two processes saving at once both keep their pictures.
    """
    folder = ensure_dir(folder)
    tmp = _temp_name(folder / f"{stem}{suffix}")
    try:
        write(tmp)
        if not tmp.exists():
            raise OutputError(f"nothing was written for '{folder / (stem + suffix)}'")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        for name in _names(stem, suffix) if not overwrite else [f"{stem}{suffix}"]:
            target = folder / name
            try:
                _place(tmp, target, overwrite)
            except OutputError:
                continue
            _fsync_dir(folder)
            return target
        raise AssertionError("unreachable: the counter is unbounded")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _names(stem: str, suffix: str) -> Iterator[str]:
    yield f"{stem}{suffix}"
    counter = 1
    while True:
        yield f"{stem}_{counter:0{COUNTER_DIGITS}d}_{suffix}"
        counter += 1


def ensure_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) or say why it cannot be an output folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create output folder '{folder}': a file stands in its path") from None
    except OSError as exc:
        raise OutputError(f"cannot create output folder '{folder}': {exc.strerror or exc}") from None
    return folder


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Make sure files can be written into ``folder`` now, before any long work starts (creates it)."""
    folder = ensure_dir(folder)
    probe = folder / f".hunyuan-write-test.{uuid.uuid4().hex[:12]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError as exc:
        raise OutputError(f"cannot write into output folder '{folder}': {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return folder


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that is one of the inputs, lies inside an input folder, or contains an input."""
    out_r = Path(out).expanduser().resolve()
    for src in inputs:
        if src is None:
            continue
        src_r = Path(src).expanduser().resolve()
        if out_r == src_r or src_r in out_r.parents or out_r in src_r.parents:
            raise OutputError(
                f"output '{out}' would overwrite the input '{src}' that is being read; choose another output path"
            )
