"""Items through a Ray Data actor pool: ``map_batches`` over :class:`RenderWorker` actors, each loading the
pipeline once, on its own GPU or on an even share of the CPU cores.

Ray Data restarts an actor that dies and runs its batch again elsewhere (``max_restarts`` / ``max_task_retries``
unlimited); the worker's write-once files make such a retry draw only the items whose file is not there yet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from ..errors import InputError
from .job import Item
from .worker import RenderWorker

INSTALL_HINT = ("Ray is not installed: pip install 'ray[data]' (or this project's extra: pip install "
                "'hunyuan-dit-comfy[ray]'), or render in this process with --workers 0 / workers=0")


def import_ray():
    """The ``ray`` module with Ray Data, or an :class:`InputError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra that brings pandas/pyarrow)
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def connect(ray_address: str | None):
    """Join the cluster at ``ray_address`` ("auto", "HOST:PORT", "ray://...") or start a local one; a session
    already started by the caller (``ray.init(...)`` in a script or a test) is used as it is."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=ray_address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the job prints its own progress
    return ray


def ray_records(items: list[Item], worker_options: dict, workers: int, gpus_per_worker: float | None,
                ray_address: str | None, batch_size: int) -> Iterator[dict]:
    """Render ``items`` on ``workers`` actors; yields each item's manifest record as its batch finishes.

    ``gpus_per_worker`` None takes one GPU per actor when the cluster has GPUs, else none; CPU actors share
    the cluster's cores evenly (torch threads in each actor).
    """
    ray = connect(ray_address)
    resources = ray.cluster_resources()
    if gpus_per_worker is None:
        gpus_per_worker = 1 if resources.get("GPU", 0) >= 1 else 0
    share = resources.get("CPU", 1) / workers
    # Ray's CPU count is a scheduling claim, at most 1 so Ray Data's budget for the operator always fits an actor
    # (a claim of the whole cluster never schedules); the torch threads are the actor's real share of the cores.
    cpus = min(1.0, share)
    options = {**worker_options, "threads": max(1, int(share)) if not gpus_per_worker else None}
    if not gpus_per_worker and options.get("device") is None:
        options["device"] = "cpu"  # an actor without a GPU share must not take the node's GPU by default
    rows = [{"item": item.to_json()} for item in items]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
    dataset = dataset.map_batches(RenderWorker, fn_constructor_kwargs=options, batch_size=batch_size,
                                  compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
                                  num_gpus=gpus_per_worker)
    for row in dataset.iter_rows():
        yield json.loads(row["record"])
