"""Where the rewriter keeps a user's files (saved instructions, conversations) outside any host program,
and how it changes them without losing any: atomic writes (``hunyuan_core.outputs``), a lock file beside
the data for every read-modify-write, a ``.bak`` of a damaged file before it is replaced.

The core never asks a framework for folders: callers pass a directory, or this default applies —
``$HUNYUAN_DIT_CONFIG_DIR``, else ``%APPDATA%\\hunyuan-dit`` on Windows, else
``$XDG_CONFIG_HOME/hunyuan-dit`` (``~/.config/hunyuan-dit``). ComfyUI nodes pass ComfyUI's user folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import reprlib
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import InputError, OutputError
from ..outputs import ensure_dir, save_new, write_text

CONFIG_DIR_ENV = "HUNYUAN_DIT_CONFIG_DIR"
LOCK_TIMEOUT = 600.0  # seconds to wait for another program that is changing the same file


class UserFileWarning(UserWarning):
    """A saved conversation or instruction file could not be used and was skipped (the message names it)."""


def user_dir(directory: str | os.PathLike | None = None) -> Path:
    """The folder for the user's rewriter files: ``directory`` when given, else the default above (not created)."""
    if directory is not None:
        return Path(directory).expanduser()
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "hunyuan-dit"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "hunyuan-dit"


def warn(message: str) -> None:
    """Report a skipped file without stopping the caller (logged by hosts that capture warnings)."""
    warnings.warn(message, UserFileWarning, stacklevel=3)


def show(value: object) -> str:
    """A short repr for messages about values read from files (bounded in size and depth)."""
    return reprlib.repr(value)


def is_text(value: object) -> bool:
    """A string that can be written as UTF-8 (JSON can carry lone surrogates, which cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_json(path: Path, what: str) -> object:
    """The JSON in ``path``, or :class:`InputError` saying why it cannot be read (never another exception)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} '{path}' cannot be read ({exc})") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or nesting deeper than Python's stack
        raise InputError(f"{what} '{path}' is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` while ``path`` is read, changed and written, so that no other thread or process
    changes it in between (re-entrant within a thread; released when a process dies)."""
    ensure_dir(path.parent)
    lock = FileLock(f"{path.resolve()}.lock", timeout=LOCK_TIMEOUT, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(f"'{path}' is being changed by another program: its lock '{lock.lock_file}' was "
                          f"held for over {LOCK_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise OutputError(f"cannot lock '{path}' for writing: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def save_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; :class:`OutputError` when the folder is not writable."""
    try:
        write_text(path, text)
    except OSError as exc:
        raise OutputError(f"cannot save '{path}': {exc.strerror or exc}") from None


def keep_backup(path: Path) -> Path:
    """Copy a damaged ``path`` to ``<name>.bak`` (or ``<name>_00001_.bak`` ...: older backups are kept)
    before it is replaced, and say where it went."""
    try:
        backup = save_new(path.parent, path.name, ".bak", lambda tmp: shutil.copyfile(path, tmp))
    except OSError as exc:
        raise OutputError(f"'{path}' is damaged and cannot be copied to a backup before it is replaced "
                          f"({exc.strerror or exc}); move it away by hand") from None
    warn(f"'{path}' could not be read; it is replaced now and the old file is kept as '{backup}'")
    return backup
