"""``hy.render``: a job file -> one PNG per (row, seed) in a folder, with a manifest, resumable.

Items whose file is already in the folder are not drawn again (a rerun renders only what is missing); the
rest go, grouped by prompt, to ``workers`` Ray actors or, with ``workers=0``, to one worker in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..formats.hashes import model_hash
from ..outputs import check_not_input, check_writable_dir, remove_stale_temps
from ..settings.validate import check_beta_end, check_int
from .job import Item, read_job
from .manifest import Manifest
from .worker import RenderWorker, record


@dataclass
class RenderProgress:
    """Where a job stands: items done (this run or before) and failed out of ``total``, this run's speed."""

    done: int
    failed: int
    total: int
    images_per_second: float
    eta_seconds: float | None


@dataclass
class RenderReport:
    """What a job run did: ``rendered`` images made by this run, ``skipped`` already there before it, ``failed``
    items and rows."""

    total: int
    rendered: int
    skipped: int
    failed: int
    seconds: float
    manifest: Path


def _in_process(items: list[Item], worker_options: dict) -> Iterator[dict]:
    worker = RenderWorker(**worker_options)
    for item in items:
        yield worker.render(item)


def render(
    job: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    workers: int = 0,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
    variant: str | None = None,
    bert_vocab: str | os.PathLike | None = None,
    beta_end: float | None = None,
    batch_size: int = 4,
    progress: Callable[[RenderProgress], None] | None = None,
) -> RenderReport:
    """Render every item of the ``job`` file (``.jsonl``/``.csv``) into ``out``.

    ``workers`` 0 renders here; N > 0 runs N Ray actors (``ray_address`` None starts a local Ray, "auto" or
    "HOST:PORT" joins a cluster whose nodes see ``model`` and ``out`` at the same paths). ``batch_size`` items go
    to an actor at a time. ``progress`` is called after each item. Bad rows and failed items are recorded in the
    manifest, never raised.
    """
    start = time.perf_counter()
    workers = check_int("workers", workers, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    if gpus_per_worker is not None and not (isinstance(gpus_per_worker, (int, float)) and gpus_per_worker >= 0):
        raise InputError(f"gpus_per_worker must be a number >= 0, found {gpus_per_worker!r}")
    check_not_input(out, [model])
    job = read_job(job, model=os.fspath(model), model_hash=model_hash(model, variant), variant=variant, dtype=dtype,
                   bert_vocab=bert_vocab and os.fspath(bert_vocab), beta_end=check_beta_end(beta_end))
    out = check_writable_dir(out)
    manifest = Manifest(out)
    for error in job.errors:
        manifest.append({"item": error.name, "row": error.row, "seed": None, "file": None, "status": "failed",
                         "seconds": None, "worker": None, "error": error.error})
    unique = list({item.name: item for item in job.items}.values())  # a row repeated in the file is drawn once
    present = [item for item in unique if (out / item.name).exists()]
    todo = sorted((item for item in unique if not (out / item.name).exists()), key=lambda item: item.encoding)
    total = len(unique) + len(job.errors)
    done, failed = len(present), len(job.errors)
    options = {"model": os.path.abspath(model), "out": str(out.resolve()), "device": device, "dtype": dtype,
               "variant": variant, "bert_vocab": bert_vocab and os.path.abspath(bert_vocab)}
    if workers:
        from .ray_pool import import_ray, ray_records

        import_ray()  # before anything runs: without Ray, say how to install it
    if not todo:
        records: Iterator[dict] = iter(())
    elif workers == 0:
        records = _in_process(todo, options)
    else:
        records = ray_records(todo, options, workers, gpus_per_worker, ray_address, batch_size)
    run_start = time.perf_counter()
    for result in records:
        manifest.append(result)
        done += result["status"] == "done"
        failed += result["status"] == "failed"
        if progress is not None:
            elapsed = time.perf_counter() - run_start
            finished = done + failed - len(present) - len(job.errors)
            rate = finished / elapsed if elapsed > 0 else 0.0
            left = total - done - failed
            progress(RenderProgress(done, failed, total, rate, left / rate if rate > 0 else None))
    for item in todo:  # every worker has finished: what a killed one was writing is garbage now
        remove_stale_temps(out / item.name)
    manifest.compact(record(item, "done") for item in present)
    return RenderReport(total, done - len(present), len(present), failed, time.perf_counter() - start, manifest.path)
