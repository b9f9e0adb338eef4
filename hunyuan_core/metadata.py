"""How a picture was made, written into its PNG and read back.

Two text chunks: ``parameters`` in the A1111 layout that image sites and UIs read (prompt, ``Negative prompt:``,
then ``Key: value`` pairs: steps, sampler, CFG scale, seed, size, model name and hash, LoRA / ControlNet hashes),
and ``hunyuan_dit``, the exact :class:`GenerationParams` as JSON, which is what :func:`read_params` trusts:
the A1111 text is for people and other tools, the JSON for reproducing the picture.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import __version__
from .errors import InputError
from .model.text_encoder import DEFAULT_NEGATIVE_PROMPT

PARAMETERS_KEY = "parameters"  # A1111's chunk
JSON_KEY = "hunyuan_dit"
FORMAT = 1  # version of the JSON chunk


class Resource(NamedTuple):
    """A LoRA used for a picture: the path it was loaded from, its short hash, its strength."""

    name: str
    hash: str | None
    strength: float


class ControlUse(NamedTuple):
    """A ControlNet used for a picture: model path, short hash, strength, the fraction of the steps it acted on
    (``start``..``end``) and the control image's path."""

    name: str
    hash: str | None
    strength: float
    start: float = 0.0
    end: float = 1.0
    image: str | None = None


@dataclass
class GenerationParams:
    """Everything that decides a picture's pixels. Image ``i`` of a batch is the single run with ``seed + i``, so
    each picture records its own seed. ``negative_prompt`` None is the official negative prompt. Paths (model,
    LoRAs, images) are kept as the user gave them; hashes identify the files wherever they are."""

    prompt: str
    negative_prompt: str | None = None
    width: int = 1024
    height: int = 1024
    steps: int = 50
    guidance_scale: float = 6.0
    seed: int = 42
    sampler: str = "ddpm"
    model: str = ""
    model_hash: str | None = None
    loras: list[Resource] = field(default_factory=list)
    controlnets: list[ControlUse] = field(default_factory=list)
    guidance_rescale: float = 0.0
    beta_end: float | None = None  # None: the release's default schedule
    variant: str | None = None  # official weight file (ema, module, distill, merge)
    dtype: str | None = None  # precision name, e.g. "fp16"; None: the device's default
    bert_vocab: str | None = None  # BERT vocab.txt given for an all-in-one file
    image: str | None = None  # img2img / inpainting source image
    strength: float | None = None  # img2img denoise strength (with ``image``)
    mask: str | None = None  # inpainting mask (white = repaint)
    upscale: str | None = None  # super-resolution model applied after decoding
    version: str = field(default_factory=lambda: __version__)  # the hunyuan_core release that drew it

    def pipeline_kwargs(self) -> dict:
        """The keyword arguments of ``pipe(...)`` that redraw this picture. Files are the caller's to load and
        pass: ``image``/``mask`` (as PIL images), LoRAs through ``pipe.set_loras``, ControlNets as ``controlnets``."""
        kwargs = dict(prompt=self.prompt, negative_prompt=self.negative_prompt, width=self.width, height=self.height,
                      steps=self.steps, guidance_scale=self.guidance_scale, seed=self.seed, sampler=self.sampler,
                      guidance_rescale=self.guidance_rescale, beta_end=self.beta_end)
        if self.image is not None and self.strength is not None:
            kwargs["strength"] = self.strength
        return kwargs

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, ensure_ascii=True, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "metadata") -> "GenerationParams":
        """Parse :meth:`to_json` text; :class:`InputError` naming the field for anything malformed."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"{where}: the '{JSON_KEY}' chunk is not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: the '{JSON_KEY}' chunk must hold a JSON object; found {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise InputError(f"{where}: '{JSON_KEY}' format {data.get('format')!r:.20} is not the {FORMAT} this "
                             f"release reads; update hunyuan-dit")
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = _field_value(f.name, data[f.name], where)
        if "prompt" not in values:
            raise InputError(f"{where}: the '{JSON_KEY}' chunk has no prompt")
        return cls(**values)


_NUMBERS = {"width", "height", "steps", "seed"}
_FLOATS = {"guidance_scale", "guidance_rescale", "beta_end", "strength"}


def _field_value(name: str, value: object, where: str) -> object:
    def bad(expected: str) -> InputError:
        return InputError(f"{where}: '{name}' should be {expected}; found {json.dumps(value)[:60]}")

    if name == "loras":
        if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 3 for v in value):
            raise bad("a list of [path, hash, strength]")
        return [Resource(_text(v[0], bad), _optional_text(v[1], bad), _number(v[2], bad)) for v in value]
    if name == "controlnets":
        if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 6 for v in value):
            raise bad("a list of [path, hash, strength, start, end, image]")
        return [ControlUse(_text(v[0], bad), _optional_text(v[1], bad), _number(v[2], bad), _number(v[3], bad),
                           _number(v[4], bad), _optional_text(v[5], bad)) for v in value]
    if name in _NUMBERS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("a whole number")
        return value
    if name in _FLOATS:
        return None if value is None and name in ("beta_end", "strength") else _number(value, bad)
    if name in ("prompt", "sampler", "model", "version"):
        return _text(value, bad)
    return _optional_text(value, bad)


def _text(value: object, bad) -> str:
    if not isinstance(value, str):
        raise bad("text")
    return value


def _optional_text(value: object, bad) -> str | None:
    return None if value is None else _text(value, bad)


def _number(value: object, bad) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad("a number")
    return float(value)


def _quote(text: str) -> str:
    """A value in A1111's ``Key: value, ...`` line, quoted as A1111 does when it would break the line."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def _stem(path: str) -> str:
    return Path(path).stem or path


def format_params(params: GenerationParams) -> str:
    """The A1111-style text: the prompt (with ``<lora:name:strength>`` tags, as A1111 writes them), the
    negative prompt (the official one spelled out when ``None``), then one ``Key: value`` line."""
    p = params
    tags = "".join(f" <lora:{_stem(r.name)}:{r.strength:g}>" for r in p.loras)
    negative = DEFAULT_NEGATIVE_PROMPT if p.negative_prompt is None else p.negative_prompt
    pairs = [("Steps", p.steps), ("Sampler", p.sampler), ("CFG scale", f"{p.guidance_scale:g}"), ("Seed", p.seed),
             ("Size", f"{p.width}x{p.height}")]
    if p.model_hash:
        pairs.append(("Model hash", p.model_hash))
    pairs.append(("Model", _quote(_stem(p.model))))
    if p.variant:
        pairs.append(("Variant", p.variant))
    if p.image is not None:
        pairs += [("Denoising strength", f"{p.strength:g}"), ("Init image", _quote(p.image))]
    if p.mask is not None:
        pairs.append(("Mask", _quote(p.mask)))
    if p.guidance_rescale:
        pairs.append(("CFG rescale", f"{p.guidance_rescale:g}"))
    if p.beta_end is not None:
        pairs.append(("Beta end", f"{p.beta_end:g}"))
    if p.dtype:
        pairs.append(("Precision", p.dtype))
    if p.loras:
        pairs.append(("Lora hashes", json.dumps(", ".join(f"{_stem(r.name)}: {r.hash or 'unknown'}" for r in p.loras),
                                                ensure_ascii=False)))
    for i, c in enumerate(p.controlnets):
        desc = (f"Model: {_stem(c.name)} [{c.hash or 'unknown'}], Weight: {c.strength:g}, "
                f"Guidance Start: {c.start:g}, Guidance End: {c.end:g}")
        pairs.append((f"ControlNet {i}", json.dumps(desc, ensure_ascii=False)))
    if p.upscale:
        pairs.append(("Upscaler", _quote(_stem(p.upscale))))
    if p.version:
        pairs.append(("Version", f"hunyuan-dit {p.version}"))
    settings = ", ".join(f"{k}: {v}" for k, v in pairs)
    return f"{p.prompt}{tags}\nNegative prompt: {negative}\n{settings}"


def png_info(params: GenerationParams) -> PngInfo:
    """PNG text chunks for ``Image.save(..., pnginfo=png_info(params))``: A1111 ``parameters`` + ``hunyuan_dit``
    JSON (UTF-8 text goes into an iTXt chunk, as PIL does for non-Latin-1 text)."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, format_params(params))
    info.add_text(JSON_KEY, params.to_json())
    return info


def read_params(source: str | os.PathLike | Image.Image) -> GenerationParams:
    """The :class:`GenerationParams` stored in a PNG written by this project (a path or an opened image).

    Raises :class:`InputError` for a picture without our chunk, saying whether it carries another tool's
    A1111 ``parameters`` text instead (which names settings, not an exact recipe).
    """
    if isinstance(source, Image.Image):
        image, where = source, "image"
    else:
        from .images import open_image

        image, where = open_image(source), f"'{source}'"
    text = image.info.get(JSON_KEY)
    if text is None:
        other = " (it has another tool's A1111 'parameters' text, which is not an exact recipe)" \
            if PARAMETERS_KEY in image.info else ""
        raise InputError(f"{where} carries no Hunyuan-DiT parameters: expected a PNG saved by hunyuan-dit with its "
                         f"'{JSON_KEY}' text chunk{other}")
    if not isinstance(text, str):
        raise InputError(f"{where}: the '{JSON_KEY}' chunk is not text")
    return GenerationParams.from_json(text, where)
