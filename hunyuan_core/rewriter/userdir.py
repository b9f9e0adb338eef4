"""Where the rewriter keeps a user's files (saved instructions, conversations) outside any host program.

The core never asks a framework for folders: callers pass a directory, or this default applies —
``$HUNYUAN_DIT_CONFIG_DIR``, else ``%APPDATA%\\hunyuan-dit`` on Windows, else
``$XDG_CONFIG_HOME/hunyuan-dit`` (``~/.config/hunyuan-dit``). ComfyUI nodes pass ComfyUI's user folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG_DIR_ENV = "HUNYUAN_DIT_CONFIG_DIR"


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader (another process, a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
