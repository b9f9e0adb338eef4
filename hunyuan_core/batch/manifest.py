"""The job manifest ``<out>/manifest.jsonl``: one JSON line per item (status, file, seconds, worker, error).

Every record has an ``item`` key: the file name of an image, or ``row-<line>`` for a row that failed to parse.

While a job runs, each result is appended as one line, under a file lock, so two jobs writing into the same
folder never interleave or lose lines and a job that dies leaves a true record of what it finished. When a job
ends, the manifest is rewritten (under the same lock, through a temporary file and a rename) with one line per
item: its latest record, or a ``done`` line for an item whose file is there but was never recorded (a manifest
deleted by hand).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock

from ..outputs import append_line, atomic_open

MANIFEST = "manifest.jsonl"


class Manifest:
    """Append-only record of a job's results in ``folder``, compacted to one line per item by :meth:`compact`."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / MANIFEST
        self._lock = FileLock(str(self.path) + ".lock")

    def append(self, record: dict) -> None:
        """Add one item's result."""
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            append_line(self.path, line)

    def records(self) -> dict[str, dict]:
        """The latest record of each item (keyed by its ``item``), in the order items first appear; a line that is
        not a JSON object (a hand edit, a disk that filled mid-line) is skipped."""
        latest: dict[str, dict] = {}
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return latest
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("item"), str):
                latest[record["item"]] = record
        return latest

    def compact(self, present: Iterable[dict]) -> None:
        """Rewrite the manifest with one line per item; ``present`` are records for items whose file exists,
        used where the manifest has no ``done`` record for them."""
        with self._lock:
            latest = self.records()
            for record in present:
                if latest.get(record["item"], {}).get("status") != "done":
                    latest[record["item"]] = record
            with atomic_open(self.path, "w") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in latest.values())
