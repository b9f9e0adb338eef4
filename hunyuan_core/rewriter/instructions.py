"""Saved instructions: named prompt templates such as ``{prompt}，水墨画风格`` that users reuse.

An instruction applies *before* rewriting (it shapes the request the LLM reads) or *after* it (it is
added to the finished description, and survives the cut to the encoder limit). They live in
``instructions.json`` in the user's folder; a few built-in ones are listed until a saved one replaces them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ..errors import InputError
from .userdir import user_dir, write_text_atomic

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
        if not self.name.strip():
            raise InputError("instruction name is empty")
        if self.template.count(PLACEHOLDER) != 1:
            raise InputError(f"instruction {self.name!r}: the template must contain {PLACEHOLDER} exactly once, "
                             f"where the prompt goes; got {self.template!r}")
        if self.position not in POSITIONS:
            raise InputError(f"instruction {self.name!r}: position {self.position!r}, expected 'before' or 'after'")

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

    def _saved(self) -> dict[str, Instruction]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            items = data["instructions"]
            return {item["name"]: Instruction(**item) for item in items}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"saved instructions '{self.path}' cannot be read ({type(exc).__name__}: {exc}); "
                             "fix or delete the file") from None

    def list(self) -> list[Instruction]:
        """Every instruction: built-in ones first (unless replaced), then the saved ones, by name."""
        saved = self._saved()
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
        saved = self._saved()
        saved[instruction.name] = instruction
        self._write(saved)

    def delete(self, name: str) -> None:
        saved = self._saved()
        if name not in saved:
            raise InputError(f"no saved instruction named {name!r} in '{self.path}'")
        del saved[name]
        self._write(saved)

    def _write(self, saved: dict[str, Instruction]) -> None:
        data = {"instructions": [asdict(i) for i in sorted(saved.values(), key=lambda i: i.name)]}
        write_text_atomic(self.path, json.dumps(data, ensure_ascii=False, indent=1))
