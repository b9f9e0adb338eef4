"""Saved instructions: named prompt templates such as ``{prompt}，水墨画风格`` that users reuse.

An instruction applies *before* rewriting (it shapes the request the LLM reads) or *after* it (it is
added to the finished description, and survives the cut to the encoder limit). They live in
``instructions.json`` in the user's folder; a few built-in ones are listed until a saved one replaces them.
A damaged file (or entry) is skipped with a warning, never an error that would hide the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from ..errors import InputError
from .userdir import is_text, keep_backup, locked, read_json, save_text, show, user_dir, warn

PLACEHOLDER = "{prompt}"
POSITIONS = ("before", "after")
INSTRUCTIONS_FILE = "instructions.json"


@dataclass(frozen=True)
class Instruction:
    """``template`` holds ``{prompt}`` once; ``position`` is ``"before"`` or ``"after"`` rewriting."""

    name: str
    template: str
    position: str = "after"

    def __post_init__(self) -> None:
        for key in ("name", "template", "position"):
            value = getattr(self, key)
            if not is_text(value):
                raise InputError(f"instruction {key} {show(value)}: expected text")
        if not self.name.strip():
            raise InputError("instruction name is empty")
        if self.template.count(PLACEHOLDER) != 1:
            raise InputError(f"instruction {self.name!r}: the template must contain {PLACEHOLDER} exactly once, "
                             f"where the prompt goes; got {self.template!r}")
        if self.position not in POSITIONS:
            raise InputError(f"instruction {self.name!r}: position {self.position!r}, expected 'before' or 'after'")

    @classmethod
    def from_dict(cls, item: object, where: str) -> Instruction:
        """An instruction read from a file: an object with name, template and optionally position."""
        keys = {f.name for f in fields(cls)}
        if not isinstance(item, dict) or not {"name", "template"} <= item.keys() <= keys:
            raise InputError(f"{where}: expected an object with name, template (and optionally position); "
                             f"got {show(item)}")
        try:
            return cls(**item)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def apply(self, text: str) -> str:
        """The template with ``text`` in place of ``{prompt}`` (braces in ``text`` are left alone)."""
        before, after = self.template.split(PLACEHOLDER)
        return f"{before}{text}{after}"


BUILTIN_INSTRUCTIONS = (
    Instruction("水墨画 (ink wash)", "{prompt}，水墨画风格，留白，淡雅的墨色"),
    Instruction("写实摄影 (photo)", "{prompt}，写实摄影，自然光，细节丰富，高清"),
    Instruction("动漫 (anime)", "{prompt}，日系动漫风格，明亮的色彩，干净的线条"),
    Instruction("油画 (oil painting)", "{prompt}，古典油画，厚涂笔触，温暖的光影"),
    Instruction("English description", "Describe in English: {prompt}", position="before"),
)


class InstructionStore:
    """The user's saved instructions (``<directory>/instructions.json``) plus the built-in ones."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.path = user_dir(directory) / INSTRUCTIONS_FILE

    def _read(self) -> tuple[dict[str, Instruction], bool]:
        """The saved instructions by name, and whether the file was damaged (unusable or with entries
        skipped, each with a warning): such a file is kept as ``.bak`` before it is replaced."""
        if not self.path.exists():
            return {}, False
        try:
            data = read_json(self.path, "saved instructions")
        except InputError as exc:
            warn(f"{exc}; ignored")
            return {}, True
        items = data.get("instructions") if isinstance(data, dict) else None
        if not isinstance(items, list):
            warn(f"saved instructions '{self.path}': expected {{\"instructions\": [...]}}, got {show(data)}; ignored")
            return {}, True
        saved, damaged = {}, False
        for i, item in enumerate(items, 1):
            try:
                instruction = Instruction.from_dict(item, f"saved instructions '{self.path}', entry {i}")
            except InputError as exc:
                warn(f"{exc}; skipped")
                damaged = True
                continue
            saved[instruction.name] = instruction
        return saved, damaged

    def list(self) -> list[Instruction]:
        """Every instruction: built-in ones first (unless replaced), then the saved ones, by name."""
        saved, _ = self._read()
        builtins = [i for i in BUILTIN_INSTRUCTIONS if i.name not in saved]
        return builtins + sorted(saved.values(), key=lambda i: i.name)

    def names(self) -> list[str]:
        return [i.name for i in self.list()]

    def get(self, name: str) -> Instruction:
        for instruction in self.list():
            if instruction.name == name:
                return instruction
        raise InputError(f"no saved instruction named {name!r}; known: {', '.join(self.names())} "
                         f"(saved ones are in '{self.path}')")

    def save(self, instruction: Instruction) -> None:
        """Add or replace an instruction by name."""
        with locked(self.path):
            saved, damaged = self._read()
            saved[instruction.name] = instruction
            self._write(saved, damaged)

    def delete(self, name: str) -> None:
        with locked(self.path):
            saved, damaged = self._read()
            if name not in saved:
                raise InputError(f"no saved instruction named {name!r} in '{self.path}'")
            del saved[name]
            self._write(saved, damaged)

    def _write(self, saved: dict[str, Instruction], damaged: bool) -> None:
        if damaged:
            keep_backup(self.path)
        data = {"instructions": [asdict(i) for i in sorted(saved.values(), key=lambda i: i.name)]}
        save_text(self.path, json.dumps(data, ensure_ascii=False, indent=1))
