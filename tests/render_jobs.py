"""What the render tests share: writing job files, and drawing a job's items with the pipeline itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Malformed rows and the reason each must be recorded with.
BAD_ROWS = [
    ({"prompt": "a fox", "sampler": "nope", "width": 64, "height": 64}, "unknown sampler 'nope'"),
    ({"prompt": "a fox", "width": 72, "height": 64}, "not a multiple of 16"),
    ({"negative_prompt": "blurry", "width": 64, "height": 64}, "the row has no prompt"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def draw_in_process(model: Path, params_list) -> list[np.ndarray]:
    """Each item drawn by the pipeline's own call, ``pipe(**params.pipeline_kwargs())`` (the reference)."""
    import hunyuan_core as hy

    pipe = hy.load_pipeline(model, device="cpu")
    return [np.asarray(pipe(**p.pipeline_kwargs()).images[0].convert("RGB")) for p in params_list]
