"""Multi-turn drawing conversations: turns, undo, reset, and JSON files that outlive the process.

A :class:`Session` is plain data; the rewriter reads its history and appends a turn per request, so a
session saved by one process continues in another and two sessions never share anything. Subject
consistency across turns comes from reusing the seed (the official app keeps one seed until reset) and,
optionally, from starting each picture from the previous one (img2img at ``img2img_strength``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from .userdir import user_dir, write_text_atomic

SESSION_FORMAT = "hunyuan-dit-session"
SESSION_VERSION = 1
MAX_SEED = 2**32 - 1


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


@dataclass
class Turn:
    """One request and what came of it. ``reply`` is the model's raw answer, which later turns see."""

    request: str
    reply: str
    prompt: str
    refused: bool
    seed: int
    image: str | None = None
    created: float = field(default_factory=time.time)  # seconds since the epoch


@dataclass
class Session:
    """A named conversation. ``reuse_seed``: every turn draws with ``seed`` (else ``seed + turn index``);
    ``img2img_strength``: when set, each picture starts from the previous turn's picture at that strength."""

    name: str = "default"
    seed: int = field(default_factory=random_seed)
    reuse_seed: bool = True
    img2img_strength: float | None = None
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the settings (after changing them by hand)."""
        if not 0 <= int(self.seed) <= MAX_SEED:
            raise InputError(f"session seed {self.seed}: expected 0..{MAX_SEED}")
        if self.img2img_strength is not None and not 0.0 < self.img2img_strength <= 1.0:
            raise InputError(f"img2img strength {self.img2img_strength}: expected a value in (0, 1]")

    def history(self, max_turns: int | None = None) -> list[tuple[str, str]]:
        """``(request, reply)`` pairs, oldest first (the last ``max_turns`` when given)."""
        if max_turns is not None and max_turns < 0:
            raise InputError(f"max_turns {max_turns}: expected 0 or more")
        turns = self.turns if max_turns is None else self.turns[len(self.turns) - min(max_turns, len(self.turns)):]
        return [(t.request, t.reply) for t in turns]

    def next_seed(self) -> int:
        """The seed the next turn draws with."""
        return self.seed if self.reuse_seed else (self.seed + len(self.turns)) % (MAX_SEED + 1)

    def add_turn(self, request: str, reply: str, prompt: str, refused: bool) -> Turn:
        turn = Turn(request=request, reply=reply, prompt=prompt, refused=refused, seed=self.next_seed())
        self.turns.append(turn)
        return turn

    def undo(self) -> Turn | None:
        """Drop the last turn (the official "undo" drops one request and its reply); returns it."""
        return self.turns.pop() if self.turns else None

    def reset(self, seed: int | None = None) -> None:
        """Forget every turn; ``seed`` replaces the session's seed when given."""
        self.turns.clear()
        if seed is not None:
            self.seed = seed
            self.validate()

    def previous_image(self) -> str | None:
        """The most recent picture drawn in this session, if any."""
        return next((t.image for t in reversed(self.turns) if t.image), None)

    def init_image(self) -> str | None:
        """The picture the next turn starts from: the previous one when img2img is on and it still exists."""
        image = self.previous_image() if self.img2img_strength else None
        return image if image and os.path.isfile(image) else None

    # ---------------------------------------------------------------------------------------- files
    def to_dict(self, base: Path | None = None) -> dict:
        """JSON-ready data; image paths under ``base`` are stored relative to it."""
        turns = []
        for turn in self.turns:
            data = asdict(turn)
            if base is not None and turn.image and Path(turn.image).is_relative_to(base):
                data["image"] = Path(turn.image).relative_to(base).as_posix()
            turns.append(data)
        return {"format": SESSION_FORMAT, "version": SESSION_VERSION, "name": self.name, "seed": self.seed,
                "reuse_seed": self.reuse_seed, "img2img_strength": self.img2img_strength, "turns": turns}

    @classmethod
    def from_dict(cls, data: dict, base: Path | None = None, where: str = "session") -> Session:
        if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
            raise InputError(f"{where}: not a Hunyuan-DiT session file (expected \"format\": \"{SESSION_FORMAT}\")")
        if data.get("version", 0) > SESSION_VERSION:
            raise InputError(f"{where}: session format version {data['version']} is newer than this program's "
                             f"({SESSION_VERSION}); update hunyuan-dit")
        try:
            turns = []
            for item in data.get("turns", []):
                turn = Turn(**item)
                if turn.image and base is not None and not os.path.isabs(turn.image):
                    turn.image = str(base / turn.image)
                turns.append(turn)
            return cls(name=data["name"], seed=int(data["seed"]), reuse_seed=bool(data.get("reuse_seed", True)),
                       img2img_strength=data.get("img2img_strength"), turns=turns)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed session data ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the session as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(path.parent.resolve()), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Session:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"session file '{path}' does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"session file '{path}' cannot be read ({exc})") from None
        return cls.from_dict(data, path.parent.resolve(), where=f"session file '{path}'")


class SessionStore:
    """Named sessions as ``<name>.json`` files in one folder (default: ``<user dir>/sessions``)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else user_dir() / "sessions"

    def file_stem(self, name: str) -> str:
        """A file name for ``name``; names that are not already safe get a hash, so two never share a file."""
        if not name or not name.strip():
            raise InputError("session name is empty")
        safe = re.sub(r"[^\w.-]", "_", name.strip()).strip(".") or "session"
        if safe == name:
            return safe
        return f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"

    def path(self, name: str) -> Path:
        return self.directory / f"{self.file_stem(name)}.json"

    def image_dir(self, name: str) -> Path:
        """Where pictures of session ``name`` may be kept (beside its file, so that they move with it)."""
        return self.directory / f"{self.file_stem(name)}-images"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str, seed: int | None = None) -> Session:
        """Session ``name`` from disk, or a new one (with ``seed`` when given) if it was never saved."""
        path = self.path(name)
        if not path.is_file():
            return Session(name=name) if seed is None else Session(name=name, seed=seed)
        session = Session.load(path)
        if session.name != name:
            raise InputError(f"session file '{path}' belongs to session {session.name!r}, not {name!r}")
        return session

    def save(self, session: Session) -> Path:
        return session.save(self.path(session.name))

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Names of the saved sessions, sorted."""
        names = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                names.append(Session.load(path).name)
            except InputError:
                continue
        return sorted(names)
