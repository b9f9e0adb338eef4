"""``hunyuan-dit render``: a job file of requests -> PNGs and a manifest, in this process or on Ray workers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..settings.devices import DTYPES
from .run import RenderProgress, render


def _progress(p: RenderProgress) -> None:
    eta = "--" if p.eta_seconds is None else f"{int(p.eta_seconds) // 60}:{int(p.eta_seconds) % 60:02d}"
    end = "\n" if p.done + p.failed == p.total else ""
    print(f"\rrender: {p.done}/{p.total} done, {p.failed} failed, {p.images_per_second:.2f} images/s, ETA {eta}",
          end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Render the job; exit 1 when an item or a row failed (the manifest says which and why)."""
    report = render(args.job, model=args.model, out=args.out, workers=args.workers, ray_address=args.ray_address,
                    gpus_per_worker=args.gpus_per_worker, device=args.device, dtype=args.dtype, variant=args.variant,
                    bert_vocab=args.bert_vocab, beta_end=args.beta_end, batch_size=args.batch_size,
                    progress=_progress)
    print(f"{report.rendered} rendered, {report.skipped} already there, {report.failed} failed "
          f"in {report.seconds:.1f} s; manifest: {report.manifest}")
    return 1 if report.failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``render`` on the ``hunyuan-dit`` command line."""
    p = subparsers.add_parser(
        "render", help="render a JSONL/CSV job (one request per row) into a folder, resumable, on Ray workers",
        description="One PNG per (row, seed), named from the request's content; a rerun renders only what is "
                    "missing. Rows: prompt, negative_prompt, seeds (list or 'start:count'), width, height, steps, "
                    "guidance_scale, guidance_rescale, sampler, loras.",
    )
    p.add_argument("job", type=Path, help="a .jsonl or .csv file, one request per row")
    p.add_argument("--model", required=True, help="official ckpts folder, diffusers folder or all-in-one .safetensors")
    p.add_argument("--out", type=Path, required=True, help="output folder (PNGs and manifest.jsonl)")
    p.add_argument("--workers", type=int, default=0,
                   help="Ray actors, each loading the model once (0: render in this process, without Ray)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0: CPU cores split evenly)")
    p.add_argument("--ray-address", default=None,
                   help="join a running cluster: auto or HOST:PORT (default: start a local Ray)")
    p.add_argument("--batch-size", type=int, default=4, help="items handed to an actor at a time")
    p.add_argument("--device", default=None, help="device inside each worker (default: its GPU, else the CPU)")
    p.add_argument("--dtype", default=None, choices=list(DTYPES), help="weights' precision (default: fp16 on GPUs, fp32 on the CPU)")
    p.add_argument("--variant", default=None, help="official weights: ema, module, distill or merge")
    p.add_argument("--bert-vocab", default=None, help="BERT vocab.txt for an all-in-one file")
    p.add_argument("--beta-end", type=float, default=None, help="override the release's schedule end")
    p.set_defaults(func=run)
    return p
