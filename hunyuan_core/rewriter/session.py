"""Multi-turn drawing conversations: turns, undo, reset, and JSON files that outlive the process.

A :class:`Session` is plain data; the rewriter reads its history and appends a turn per request, so a
session saved by one process continues in another and two sessions never share anything. Subject
consistency across turns comes from reusing the seed (the official app keeps one seed until reset) and,
optionally, from starting each picture from the previous one (img2img at ``img2img_strength``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import InputError, OutputError
from ..outputs import save_new
from ..settings.limits import MAX_SEED
from .userdir import is_text, keep_backup, locked, read_json, save_text, show, user_dir, warn

SESSION_FORMAT = "hunyuan-dit-session"
SESSION_VERSION = 1
MAX_STEM_BYTES = 100  # file names are limited to 255 bytes; longer names are cut and told apart by a hash


def random_seed() -> int:
    """A new session's drawing seed: 32 bits, short enough to retype (any seed up to ``MAX_SEED`` is accepted)."""
    return random.getrandbits(32)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _expect(ok: bool, where: str, key: str, value: object, expected: str) -> None:
    if not ok:
        raise InputError(f"{where}: \"{key}\" is {show(value)}; expected {expected}")


def image_folder(path: Path) -> Path:
    """The folder that holds the pictures of the session saved as ``path`` (``<stem>-images`` beside it)."""
    return path.with_name(f"{path.stem}-images")


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

    @classmethod
    def from_dict(cls, item: object, where: str) -> Turn:
        """A turn read from a file, every field checked (a file may come from anyone)."""
        names = {f.name for f in fields(cls)}
        required = {"request", "reply", "prompt", "refused", "seed"}
        if not isinstance(item, dict) or not required <= item.keys() <= names:
            raise InputError(f"{where}: expected an object with {', '.join(sorted(required))} "
                             f"(and optionally image, created); got {show(item)}")
        for key in ("request", "reply", "prompt"):
            _expect(is_text(item[key]), where, key, item[key], "text")
        _expect(isinstance(item["refused"], bool), where, "refused", item["refused"], "true or false")
        _expect(_is_int(item["seed"]) and 0 <= item["seed"] <= MAX_SEED, where, "seed", item["seed"],
                f"a whole number 0..{MAX_SEED}")
        image, created = item.get("image"), item.get("created", 0.0)
        _expect(image is None or is_text(image), where, "image", image, "a file name or null")
        _expect(isinstance(created, (int, float)) and not isinstance(created, bool) and math.isfinite(created),
                where, "created", created, "a time in seconds")
        return cls(**item)


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
        if not is_text(self.name) or not self.name.strip():
            raise InputError(f"session name {show(self.name)}: expected a non-empty text")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"session seed {show(self.seed)}: expected a whole number 0..{MAX_SEED}")
        if not isinstance(self.reuse_seed, bool):
            raise InputError(f"reuse_seed {show(self.reuse_seed)}: expected true or false")
        strength = self.img2img_strength
        if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                     or not 0.0 < strength <= 1.0):
            raise InputError(f"img2img strength {show(strength)}: expected a value in (0, 1]")

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
    def from_dict(cls, data: object, base: Path | None = None, where: str = "session") -> Session:
        """A session from JSON data, every value checked; relative image paths are taken from ``base``."""
        if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
            raise InputError(f"{where}: not a Hunyuan-DiT session file (expected \"format\": \"{SESSION_FORMAT}\")")
        version, turns = data.get("version", 0), data.get("turns", [])
        _expect(_is_int(version), where, "version", version, "a whole number")
        if version > SESSION_VERSION:
            raise InputError(f"{where}: session format version {version} is newer than this program's "
                             f"({SESSION_VERSION}); update hunyuan-dit")
        _expect(isinstance(turns, list), where, "turns", turns, "a list of turns")
        parsed = [Turn.from_dict(item, f"{where}, turn {i}") for i, item in enumerate(turns, 1)]
        for turn in parsed:
            if turn.image and base is not None and not os.path.isabs(turn.image):
                turn.image = str(base / turn.image)
        try:
            return cls(name=data.get("name"), seed=data.get("seed"), reuse_seed=data.get("reuse_seed", True),
                       img2img_strength=data.get("img2img_strength"), turns=parsed)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the session as JSON: atomically (a reader never sees half a file) and under the file's lock.

        Pictures kept elsewhere (the chat command's ``--out``) are first copied into the session's picture
        folder, the only place :meth:`load` takes them from; a damaged file replaced here is kept as ``.bak``.
        """
        path = Path(path)
        with locked(path):
            self._adopt_images(image_folder(path))
            if path.exists() and not _holds_session(path, self.name):
                keep_backup(path)
            save_text(path, json.dumps(self.to_dict(path.parent.resolve()), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Session:
        """Read a session file; pictures it names outside its picture folder are dropped with a warning."""
        path = Path(path)
        where = f"session file '{path}'"
        session = cls.from_dict(read_json(path, "session file"), path.parent.resolve(), where)
        session._confine_images(image_folder(path), where)
        return session

    def _confine_images(self, folder: Path, where: str) -> None:
        """Keep only pictures inside ``folder``: a session file someone sent must not make us read other files."""
        root = folder.resolve()
        for i, turn in enumerate(self.turns, 1):
            if turn.image is None:
                continue
            try:
                resolved = Path(turn.image).resolve()
            except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
                resolved = root
            if resolved == root or not resolved.is_relative_to(root):
                warn(f"{where}, turn {i}: the picture '{turn.image}' is outside the session's picture folder "
                     f"'{folder}'; ignored")
                turn.image = None
            else:
                turn.image = str(resolved)

    def _adopt_images(self, folder: Path) -> None:
        root = folder.resolve()
        for turn in self.turns:
            source = Path(turn.image) if turn.image else None
            if source is None or source.resolve().is_relative_to(root):
                continue
            if not source.is_file():
                warn(f"session {self.name!r}: the picture '{source}' is gone or not a file; not recorded")
                turn.image = None
                continue
            try:
                copy = save_new(folder, source.stem, source.suffix, lambda tmp, src=source: shutil.copyfile(src, tmp))
            except OSError as exc:
                raise OutputError(f"cannot copy '{source}' into '{folder}': {exc.strerror or exc}") from None
            turn.image = str(copy.resolve())


def _holds_session(path: Path, name: str) -> bool:
    """Whether ``path`` is a readable session file of session ``name`` (else it is kept before replacing)."""
    try:
        return Session.from_dict(read_json(path, "session file")).name == name
    except InputError:
        return False


class SessionStore:
    """Named sessions as ``<name>.json`` files in one folder (default: ``<user dir>/sessions``)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else user_dir() / "sessions"

    def file_stem(self, name: str) -> str:
        """A file name for ``name``; names that are not already safe and short get a hash, so two never share
        a file. Long names are cut (not refused) to fit the file system's 255-byte limit on names."""
        if not is_text(name) or not name.strip():
            raise InputError(f"session name {show(name)}: expected a non-empty text")
        safe = re.sub(r"[^\w.-]", "_", name.strip()).strip(".") or "session"
        if safe == name and len(safe.encode("utf-8")) <= MAX_STEM_BYTES:
            return safe
        short = safe.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", "ignore")
        return f"{short}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"

    def path(self, name: str) -> Path:
        return self.directory / f"{self.file_stem(name)}.json"

    def image_dir(self, name: str) -> Path:
        """Where pictures of session ``name`` are kept (beside its file, so that they move with it)."""
        return image_folder(self.path(name))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str, seed: int | None = None) -> Session:
        """Session ``name`` from disk, or a new one (with ``seed`` when given) if it was never saved or its
        file cannot be used (a warning names the file; saving over it keeps it as ``.bak``)."""
        path = self.path(name)
        fresh = Session(name=name) if seed is None else Session(name=name, seed=seed)
        if not path.is_file():
            return fresh
        try:
            session = Session.load(path)
        except InputError as exc:
            warn(f"{exc}; conversation {name!r} starts afresh")
            return fresh
        if session.name != name:
            warn(f"session file '{path}' belongs to session {session.name!r}, not {name!r}; "
                 f"conversation {name!r} starts afresh")
            return fresh
        return session

    @contextlib.contextmanager
    def edit(self, name: str, seed: int | None = None) -> Iterator[Session]:
        """Load session ``name``, let the block change it, save it: all under the file's lock, so that turns
        added at the same time by other threads or processes are never lost. Nothing is saved on error."""
        with locked(self.path(name)):
            session = self.load(name, seed)
            yield session
            self.save(session)

    def save(self, session: Session) -> Path:
        return session.save(self.path(session.name))

    def delete(self, name: str) -> None:
        path = self.path(name)
        with locked(path):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot delete '{path}': {exc.strerror or exc}") from None

    def names(self) -> list[str]:
        """Names of the saved sessions, sorted; a file that cannot be read is skipped with a warning."""
        names = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                names.append(Session.from_dict(read_json(path, "session file"), where=f"session file '{path}'").name)
            except InputError as exc:
                warn(f"{exc}; skipped")
        return sorted(names)
