"""A render worker: loads the pipeline once, then renders items into the output folder, one record each.

The same class is a Ray Data actor (``__call__`` takes a batch) and the in-process worker of ``--workers 0``,
so both paths draw every image with the same call: ``pipe(**params.pipeline_kwargs())`` with the prompts passed
as their encodings (the text encoders run once per prompt, not once per image), and save it with the same PNG
metadata as ``hunyuan-dit generate``. A file is written once: an
item whose file is already there (a retried batch, a second job on the same folder) is not drawn again.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import HunyuanError, OutputError
from ..metadata import png_info
from ..outputs import atomic_path
from ..pipeline import load_pipeline
from .job import Item

ENCODINGS_KEPT = 8  # prompts kept encoded per worker: items arrive grouped by prompt, so a few suffice


def record(item: Item, status: str, **fields: object) -> dict:
    """A manifest line for ``item``."""
    return {"item": item.name, "row": item.row, "seed": item.params.seed, "file": item.name, "status": status,
            "seconds": None, "worker": None, "error": None, **fields}


class RenderWorker:
    """One loaded pipeline writing PNGs into ``out``; ``threads`` caps torch's CPU threads (CPU workers share
    the machine's cores evenly)."""

    def __init__(self, model: str, out: str, device: str | None = None, dtype: str | None = None,
                 variant: str | None = None, bert_vocab: str | None = None, threads: int | None = None):
        start = time.perf_counter()
        if threads:
            torch.set_num_threads(threads)
        self.pipe = load_pipeline(model, device=device, dtype=dtype, variant=variant, bert_vocab=bert_vocab)
        self.out = Path(out)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.load_seconds = time.perf_counter() - start
        self._encodings: OrderedDict[str, tuple] = OrderedDict()

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch ``{"item": [JSON of an Item, ...]}`` -> ``{"record": [JSON manifest line, ...]}``."""
        items = [Item.from_json(text) for text in batch["item"]]
        return {"record": [json.dumps(self.render(item), ensure_ascii=False) for item in items]}

    def render(self, item: Item) -> dict:
        """Draw and save one item; a failure is recorded, never raised (one bad item never stops a job)."""
        start = time.perf_counter()
        target = self.out / item.name
        if target.exists():
            return record(item, "done", seconds=0.0, worker=self.name, drawn=False)
        try:
            times, encoded = self._draw_and_save(item, target)
        except (HunyuanError, RuntimeError, OSError) as exc:  # bad settings, NaN, out of memory, full disk
            return record(item, "failed", seconds=time.perf_counter() - start, worker=self.name,
                          error=f"{type(exc).__name__}: {exc}")
        return record(item, "done", seconds=time.perf_counter() - start, worker=self.name, drawn=True,
                      encoded=encoded, times=times, load_seconds=self.load_seconds)

    def _encode(self, item: Item) -> tuple[tuple, bool]:
        """The (positive, negative) encodings of the item's prompts, and whether they were computed now."""
        key = item.encoding
        if key in self._encodings:
            self._encodings.move_to_end(key)
            return self._encodings[key], False
        pair = (self.pipe.encode_prompt(item.params.prompt),
                self.pipe.encode_prompt(item.params.negative_prompt, negative=True))
        self._encodings[key] = pair
        if len(self._encodings) > ENCODINGS_KEPT:
            self._encodings.popitem(last=False)
        return pair, True

    def _draw_and_save(self, item: Item, target: Path) -> tuple[dict, bool]:
        marks = [time.perf_counter()]
        self.pipe.set_loras([(lora.name, lora.strength) for lora in item.params.loras])
        (positive, negative), encoded = self._encode(item)
        marks.append(time.perf_counter())
        sampled: list[float] = []
        kwargs = {**item.params.pipeline_kwargs(), "prompt": positive, "negative_prompt": negative}
        image = self.pipe(**kwargs, progress=lambda step, total, _: sampled.append(time.perf_counter())).images[0]
        marks += [sampled[-1], time.perf_counter()]
        try:
            with atomic_path(target, overwrite=False) as tmp:
                image.save(tmp, format="PNG", pnginfo=png_info(item.params))
        except OutputError:
            if not target.exists():
                raise
            # another worker wrote the same image (same request -> same file, same pixels) a moment earlier
        marks.append(time.perf_counter())
        times = dict(zip(("encode", "sample", "decode", "write"), (b - a for a, b in zip(marks, marks[1:]))))
        return times, encoded
