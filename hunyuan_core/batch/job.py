"""A render job: a JSONL or CSV file, one request per row, expanded to one item per (row, seed).

Every row is checked on its own: a row with an unknown key, a bad value or no prompt becomes a
:class:`RowError` (recorded in the manifest as failed, with the reason), never an exception that stops the job.
Each item's file name is derived from its request's content, so the same request always maps to the same file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..formats.hashes import weights_hash
from ..metadata import GenerationParams, Resource
from ..sampling.schedulers import SAMPLERS
from ..settings.limits import MAX_JOB_ITEMS
from ..settings.validate import check_generate, check_seeds

# What a row may set; the rest of GenerationParams (model, precision, ...) is the job's. Defaults are
# GenerationParams', which are `hunyuan-dit generate`'s, so a row draws what the same generate call draws.
SETTINGS = ("negative_prompt", "width", "height", "steps", "guidance_scale", "guidance_rescale", "sampler")
KEYS = ("prompt", "seeds", *SETTINGS, "loras")


@dataclass(frozen=True)
class Item:
    """One image to render: the row it came from, everything that decides its pixels, and its file name."""

    row: int
    params: GenerationParams
    name: str

    @property
    def encoding(self) -> str:
        """Items with equal keys share one text encoding (same prompts, same LoRA set)."""
        p = self.params
        return json.dumps([[[r.name, r.strength] for r in p.loras], p.prompt, p.negative_prompt], ensure_ascii=False)

    def to_json(self) -> str:
        return json.dumps({"row": self.row, "name": self.name, "params": self.params.to_json()}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Item":
        data = json.loads(text)
        return cls(data["row"], GenerationParams.from_json(data["params"], f"item {data['name']}"), data["name"])


@dataclass(frozen=True)
class RowError:
    """A row that cannot be rendered, and why."""

    row: int
    error: str

    @property
    def name(self) -> str:
        return f"row-{self.row}"


@dataclass
class Job:
    """The items of a job file in file order, and its rows that failed to parse."""

    items: list[Item]
    errors: list[RowError]


def parse_seeds(value: object) -> list[int]:
    """``42``, ``[1, 5, 9]``, ``"0:8"`` (start:count) or, in CSV, ``"1;5;9"`` -> the list of seeds."""
    if isinstance(value, str):
        text = value.strip()
        if ":" in text:
            start, _, count = text.partition(":")
            start, count = _int("seeds start", start), _int("seeds count", count)
            if not 1 <= count <= MAX_JOB_ITEMS:
                raise InputError(f"seeds count must be between 1 and {MAX_JOB_ITEMS}, found {count}")
            return check_seeds(start, count)
        value = [_int("seed", s) for s in re.split(r"[;\s]+", text) if s]
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(seeds, list) or not seeds or len(seeds) > MAX_JOB_ITEMS:
        raise InputError(f"seeds must be a seed, a non-empty list of seeds or 'start:count', found {value!r:.80}")
    return check_seeds(seeds, len(seeds))


def parse_loras(value: object, base: Path) -> list[Resource]:
    """``["style.safetensors:0.7", ["other.safetensors", 1.0]]`` or, in CSV, ``"style.safetensors:0.7;other"``
    -> LoRAs by absolute path, hash and strength; relative paths are relative to the job file's folder."""
    from ..adapters.merge import check_strength
    from ..cli import lora_argument

    entries = [e for e in value.split(";") if e.strip()] if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise InputError(f"loras must be a list of 'FILE[:STRENGTH]' or [FILE, STRENGTH], found {value!r:.80}")
    loras = []
    for entry in entries:
        if isinstance(entry, str):
            path, strength = lora_argument(entry.strip())
        elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            path, strength = entry
        else:
            raise InputError(f"a LoRA must be 'FILE[:STRENGTH]' or [FILE, STRENGTH], found {entry!r:.80}")
        path = base / os.path.expanduser(path)
        if not path.exists():
            raise InputError(f"LoRA '{path}' does not exist")
        loras.append(Resource(str(path.resolve()), weights_hash(path), check_strength(str(path), strength)))
    return loras


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} must be an integer, found {text!r:.40}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{name} must be a number, found {text!r:.40}") from None


# How a CSV cell (always text) becomes the value a JSONL row would hold.
CSV_TYPES: dict[str, Callable[[str, str], object]] = {
    "width": _int, "height": _int, "steps": _int, "guidance_scale": _float, "guidance_rescale": _float,
}


def item_name(params: GenerationParams) -> str:
    """``<words of the prompt>_<seed>_<hash>.png``: readable, and the same for the same request. The hash covers
    what decides the pixels: files by their content hash (the same weights anywhere give the same name, other
    weights another), not by path, nor the release that drew it."""
    content = asdict(params)
    content.pop("model"), content.pop("version")
    content["loras"] = [[r.hash, r.strength] for r in params.loras]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    words = "-".join(re.findall(r"[a-z0-9]+", params.prompt.lower()))[:40].strip("-") or "hunyuan"
    return f"{words}_{params.seed}_{digest[:16]}.png"


def request_items(row: int, values: dict, base: Path, job_settings: dict) -> list[Item]:
    """One row's values -> its items, or :class:`InputError` naming what is wrong."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(KEYS)}")
    if "prompt" not in values:
        raise InputError("the row has no prompt")
    for key, value in (("prompt", values["prompt"]), ("negative_prompt", values.get("negative_prompt", ""))):
        if not isinstance(value, str) and not (key == "negative_prompt" and value is None):  # None: the official one
            raise InputError(f"{key} must be text (one prompt per row), found {value!r:.60}")
    settings = {k: values[k] for k in SETTINGS if k in values}
    sampler = settings.get("sampler", "ddpm")
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r:.40}; expected one of {', '.join(SAMPLERS)}")
    seeds = parse_seeds(values.get("seeds", GenerationParams.seed))
    params = GenerationParams(values["prompt"], loras=parse_loras(values.get("loras", []), base), **settings,
                              **job_settings)
    check_generate(prompt=params.prompt, negative_prompt=params.negative_prompt, width=params.width,
                   height=params.height, steps=params.steps, guidance_scale=params.guidance_scale,
                   guidance_rescale=params.guidance_rescale, sampler=params.sampler, seed=seeds[0])
    items = []
    for seed in seeds:
        seeded = replace(params, seed=seed)
        items.append(Item(row, seeded, item_name(seeded)))
    return items


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict | InputError]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except (ValueError, RecursionError) as exc:
            yield number, InputError(f"not valid JSON ({str(exc)[:120]})")
            continue
        yield number, values if isinstance(values, dict) else InputError(
            f"a row must be a JSON object, found {type(values).__name__}")


def _csv_rows(text: str) -> Iterator[tuple[int, dict | InputError]]:
    reader = csv.DictReader(text.splitlines())
    for values in reader:
        number = reader.line_num
        if None in values or None in values.values():
            yield number, InputError(f"the row has a different number of cells than the header ({reader.fieldnames})")
            continue
        try:
            yield number, {k.strip(): CSV_TYPES.get(k.strip(), lambda _, v: v)(k.strip(), v.strip())
                           for k, v in values.items() if v.strip()}
        except InputError as exc:
            yield number, exc


def read_job(path: str | os.PathLike, **job_settings: object) -> Job:
    """Read a ``.jsonl`` or ``.csv`` job; rows are numbered by their line in the file (the CSV header is line 1).
    ``job_settings`` are the :class:`GenerationParams` fields every row shares (model, model_hash, dtype, ...)."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise InputError(f"a job is a .jsonl or .csv file, found '{path}'")
    if not path.is_file():
        raise InputError(f"job file '{path}' does not exist or is not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"job file '{path}' cannot be read ({exc})") from None
    rows = _csv_rows(text) if path.suffix.lower() == ".csv" else _jsonl_rows(text)
    items: list[Item] = []
    errors: list[RowError] = []
    for number, values in rows:
        try:
            if isinstance(values, InputError):
                raise values
            items += request_items(number, values, path.parent, job_settings)
        except InputError as exc:
            errors.append(RowError(number, str(exc)))
        if len(items) > MAX_JOB_ITEMS:
            raise InputError(f"job '{path}' asks for more than {MAX_JOB_ITEMS:,} images; split it into several jobs")
    return Job(items, errors)
