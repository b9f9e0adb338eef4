"""``hy.render`` on a local Ray (2 CPUs, one session for the module): exactness across workers, a worker killed
mid-job, resume."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from render_jobs import BAD_ROWS, draw_in_process, pixels, write_jsonl

import hunyuan_core as hy
from hunyuan_core.metadata import read_params

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[ray]'")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def records(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_two_workers_draw_what_the_pipeline_draws(tiny_official, tmp_path):
    rows = [{"prompt": "a red fox", "seeds": "0:4", "width": 64, "height": 64, "steps": 2},
            {"prompt": "一只猫", "seeds": [7, 8, 9, 10], "width": 64, "height": 64, "steps": 2, "sampler": "euler"}]
    job = write_jsonl(tmp_path / "job.jsonl", rows + [row for row, _ in BAD_ROWS])
    out = tmp_path / "out"
    report = hy.render(job, model=tiny_official, out=out, workers=2, batch_size=2)
    assert (report.rendered, report.skipped, report.failed, report.total) == (8, 0, 3, 11)
    files = sorted(out.glob("*.png"))
    params = [read_params(f) for f in files]
    assert sorted((p.prompt, p.seed) for p in params) == [("a red fox", s) for s in range(4)] + [
        ("一只猫", s) for s in range(7, 11)]
    for f, expected in zip(files, draw_in_process(tiny_official, params)):
        assert np.array_equal(pixels(f), expected)
    lines = records(out)
    assert len(lines) == 11 and len({r["item"] for r in lines}) == 11
    assert sorted(r["file"] for r in lines if r["status"] == "done") == [f.name for f in files]
    failed = {r["row"]: r["error"] for r in lines if r["status"] == "failed"}
    assert [expected in failed[row] for row, (_, expected) in enumerate(BAD_ROWS, 3)] == [True] * 3
    assert all(r["worker"] and r["seconds"] > 0 for r in lines if r["status"] == "done")
    assert sum(r["encoded"] for r in lines if r["status"] == "done") <= 4  # two prompts, at most one per batch


def test_killed_worker_job_finishes_once_and_rerun_renders_nothing(tiny_official, tmp_path):
    job = write_jsonl(tmp_path / "job.jsonl", [{"prompt": "a red fox", "seeds": "0:6", "width": 64, "height": 64,
                                                "steps": 2}])
    out = tmp_path / "out"
    killed = {}

    def kill_first_worker():  # the fault: SIGKILL the actor that reported first, while it works on its next batch
        while not killed:
            lines = records(out) if (out / "manifest.jsonl").exists() else []
            if lines:
                pid = int(lines[0]["worker"].rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at=time.monotonic())
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    report = hy.render(job, model=tiny_official, out=out, workers=2, batch_size=1)
    finished = time.monotonic()
    killer.join(timeout=5)
    assert killed and killed["at"] < finished
    assert (report.rendered, report.skipped, report.failed) == (6, 0, 0)
    names = sorted(p.name for p in out.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 6 and not [n for n in names if n.endswith(".tmp")]  # no duplicate, no half-written file
    assert sorted(read_params(out / n).seed for n in pngs) == list(range(6))
    lines = records(out)
    assert len(lines) == 6 and {r["status"] for r in lines} == {"done"}
    assert any(int(r["worker"].rsplit(":", 1)[1]) != killed["pid"] for r in lines)

    again = hy.render(job, model=tiny_official, out=out, workers=2)
    assert (again.rendered, again.skipped, again.failed) == (0, 6, 0)
    assert sorted(p.name for p in out.iterdir()) == names and records(out) == lines
