"""Batch rendering throughput: images per second in-process and on a local Ray with 1 and 2 workers, the per-item
overhead of the Ray path, and where the time of one image goes.

    python bench/bench_render.py [--images 8] [--size 256] [--steps 4] [--cpus 2]

The model is the tiny random model (``hunyuan_core.tiny``); the job is ``--images`` items of two prompts (so half
the items reuse an encoding). Each configuration renders into a fresh folder; the time counted is the whole
``hy.render`` call (job parsing, model hash, start of the actors and the model load in each, rendering, manifest);
"steady" leaves out the model load (workers load at the same time, so the longest load). Ray itself is started
once beforehand (``ray.init(num_cpus=--cpus)``), as a cluster would already run. Printed: images/s per
configuration, the ratio to in-process, the Ray per-item overhead (seconds per image minus the in-process seconds
per image, whole and steady), and the split of one image's time into load (per worker, spread over the images),
encode, sample, decode and write, from the manifest's per-item times. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hunyuan_core as hy  # noqa: E402
from hunyuan_core.tiny import make_tiny  # noqa: E402

PARTS = ("encode", "sample", "decode", "write")


def write_job(path: Path, images: int, size: int, steps: int) -> Path:
    half = images // 2
    rows = [{"prompt": "a red fox in the snow", "seeds": f"0:{half}", "width": size, "height": size, "steps": steps},
            {"prompt": "一只戴着墨镜的柴犬", "seeds": f"100:{images - half}", "width": size, "height": size,
             "steps": steps}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run(job: Path, model: Path, out: Path, workers: int) -> dict:
    start = time.perf_counter()
    report = hy.render(job, model=model, out=out, workers=workers, batch_size=1)
    wall = time.perf_counter() - start
    done = [json.loads(line) for line in report.manifest.read_text().splitlines()]
    done = [r for r in done if r["status"] == "done" and r.get("drawn")]
    loads = {r["worker"]: r["load_seconds"] for r in done}
    return {"wall": wall, "images": len(done), "records": done, "load": sum(loads.values()),
            "steady": wall - max(loads.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray may use")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        tmp = Path(tmp)
        model = make_tiny(tmp / "model")
        job = write_job(tmp / "job.jsonl", args.images, args.size, args.steps)
        results = {name: run(job, model, tmp / name, workers)
                   for name, workers in (("in-process", 0), ("ray-1", 1), ("ray-2", 2))}
    ray.shutdown()

    base = results["in-process"]
    print(f"tiny model, {args.images} images at {args.size}x{args.size}, {args.steps} steps, {args.cpus} CPUs")
    print(f"{'config':<12}{'wall s':>8}{'images/s':>10}{'vs in-proc':>12}{'steady img/s':>14}{'vs in-proc':>12}"
          f"{'overhead s/img':>16}{'steady':>8}")
    for name, r in results.items():
        rate, steady = r["images"] / r["wall"], r["images"] / r["steady"]
        base_rate, base_steady = base["images"] / base["wall"], base["images"] / base["steady"]
        print(f"{name:<12}{r['wall']:>8.2f}{rate:>10.3f}{rate / base_rate:>11.2f}x{steady:>14.3f}"
              f"{steady / base_steady:>11.2f}x{1 / rate - 1 / base_rate:>16.3f}{1 / steady - 1 / base_steady:>8.3f}")
    print("\nper image (mean seconds; load = each worker's model load spread over the images it drew)")
    print(f"{'config':<12}" + "".join(f"{p:>9}" for p in ("load", *PARTS)))
    for name, r in results.items():
        n = r["images"]
        means = [r["load"] / n] + [sum(rec["times"][p] for rec in r["records"]) / n for p in PARTS]
        print(f"{name:<12}" + "".join(f"{m:>9.3f}" for m in means))


if __name__ == "__main__":
    main()
