"""``hunyuan-dit render`` / ``hy.render`` without Ray: job files, names, the manifest, exactness, resume."""

import json
import sys
import threading

import numpy as np
import pytest
from render_jobs import BAD_ROWS, draw_in_process, pixels, write_jsonl

import hunyuan_core as hy
from hunyuan_core.batch.job import read_job
from hunyuan_core.batch.manifest import Manifest
from hunyuan_core.cli import main
from hunyuan_core.errors import InputError
from hunyuan_core.formats.hashes import weights_hash
from hunyuan_core.metadata import GenerationParams, read_params

JOB = {"model": "m", "model_hash": "0123456789"}


def test_jsonl_rows_expand_to_items_and_bad_rows_are_reasons(tmp_path):
    (tmp_path / "style.safetensors").write_bytes(b"lora weights")
    job = read_job(write_jsonl(tmp_path / "job.jsonl", [
        {"prompt": "a red fox", "seeds": "10:3", "width": 64, "height": 64, "steps": 2, "loras": ["style.safetensors:0.5"]},
        {"prompt": "一只猫", "seeds": [7, 9], "sampler": "euler", "guidance_scale": 4},
        *[row for row, _ in BAD_ROWS],
        {"prompt": "x", "colour": "red"},
        {"prompt": "x", "seeds": "3:0"},
        {"prompt": "x", "steps": "20"},
        {"prompt": ["x", "y"]},
    ]), **JOB)
    assert [(i.row, i.params.seed) for i in job.items] == [(1, 10), (1, 11), (1, 12), (2, 7), (2, 9)]
    fox = job.items[0].params
    assert (fox.width, fox.steps, fox.model_hash, fox.loras[0].strength) == (64, 2, "0123456789", 0.5)
    assert fox.loras[0].name == str(tmp_path / "style.safetensors") and fox.loras[0].hash == weights_hash(
        tmp_path / "style.safetensors")
    cat = job.items[3].params  # unset keys are generate's defaults
    assert (cat.width, cat.height, cat.steps, cat.guidance_scale, cat.sampler, cat.negative_prompt) == (
        1024, 1024, 50, 4.0, "euler", None)
    reasons = {e.row: e.error for e in job.errors}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9]
    for row, (_, expected) in enumerate(BAD_ROWS, 3):
        assert expected in reasons[row]
    assert "unknown key(s) 'colour'" in reasons[6]
    assert "seeds count must be between 1" in reasons[7]
    assert "steps for sampler 'ddpm' must be an integer" in reasons[8]
    assert "prompt must be text (one prompt per row)" in reasons[9]


def test_csv_cells_are_typed_like_jsonl(tmp_path):
    path = tmp_path / "job.csv"
    path.write_text('prompt,seeds,width,height,guidance_scale,sampler\n'
                    '"a fox, at dawn",1;5,64,64,4.5,\n'
                    'x,2,wide,64,,\n'
                    'y,1\n', encoding="utf-8")
    job = read_job(path, **JOB)
    assert [(i.params.prompt, i.params.seed, i.params.width, i.params.guidance_scale, i.params.sampler)
            for i in job.items] == [("a fox, at dawn", 1, 64, 4.5, "ddpm"), ("a fox, at dawn", 5, 64, 4.5, "ddpm")]
    assert [(e.row, e.error) for e in job.errors] == [
        (3, "width must be an integer, found 'wide'"),
        (4, "the row has a different number of cells than the header (['prompt', 'seeds', 'width', 'height', "
            "'guidance_scale', 'sampler'])")]


def test_names_follow_the_content_not_the_paths(tmp_path):
    row = {"prompt": "A Red Fox!", "seeds": [1, 2], "width": 64, "height": 64}
    a = read_job(write_jsonl(tmp_path / "a.jsonl", [row, row]), **JOB).items
    b = read_job(write_jsonl(tmp_path / "b.jsonl", [row]), model="elsewhere", model_hash="0123456789").items
    c = read_job(write_jsonl(tmp_path / "c.jsonl", [row]), model="m", model_hash="9999999999").items
    d = read_job(write_jsonl(tmp_path / "d.jsonl", [{**row, "steps": 49}]), **JOB).items
    assert a[0].name.startswith("a-red-fox_1_") and a[1].name.startswith("a-red-fox_2_")
    assert [i.name for i in a[:2]] == [i.name for i in a[2:]] == [i.name for i in b]  # same request, same file
    assert not {i.name for i in a} & {i.name for i in c + d}  # other weights or settings, other files


def test_manifest_two_writers_lose_no_line(tmp_path):
    manifest = Manifest(tmp_path)

    def write(worker):
        for i in range(50):
            manifest.append({"item": f"{worker}-{i}", "status": "done", "worker": worker})

    threads = [threading.Thread(target=write, args=(w,)) for w in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manifest.append({"item": "a-0", "status": "failed", "worker": "a"})
    manifest.compact([{"item": "c-0", "status": "done"}, {"item": "a-1", "status": "done", "worker": None}])
    lines = [json.loads(line) for line in manifest.path.read_text().splitlines()]
    assert len(lines) == 101 and len({r["item"] for r in lines}) == 101
    by_item = {r["item"]: r for r in lines}
    assert by_item["a-0"]["status"] == "failed" and by_item["a-1"]["worker"] == "a" and "c-0" in by_item


def test_in_process_render_is_the_pipeline_call_and_generate(tiny_official, tmp_path, capsys):
    rows = [{"prompt": "a red fox", "seeds": "3:2", "width": 64, "height": 64, "steps": 2},
            {"prompt": "一只猫", "negative_prompt": "", "seeds": [5], "width": 96, "height": 64, "steps": 2,
             "sampler": "euler", "guidance_scale": 4.0}]
    job = write_jsonl(tmp_path / "job.jsonl", rows + [row for row, _ in BAD_ROWS])
    out = tmp_path / "out"
    assert main(["render", str(job), "--model", str(tiny_official), "--out", str(out), "--workers", "0"]) == 1
    assert "3 rendered, 0 already there, 3 failed" in capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    params = [read_params(f) for f in files]
    assert sorted((p.prompt, p.seed) for p in params) == [("a red fox", 3), ("a red fox", 4), ("一只猫", 5)]
    for f, expected in zip(files, draw_in_process(tiny_official, params)):
        assert np.array_equal(pixels(f), expected)
    fox = next(f for f, p in zip(files, params) if p.seed == 3)
    assert main(["generate", "--model", str(tiny_official), "--prompt", "a red fox", "--width", "64", "--height",
                 "64", "--steps", "2", "--seed", "3", "--out", str(tmp_path / "gen")]) == 0
    assert np.array_equal(pixels(fox), pixels(tmp_path / "gen" / "hunyuan_3_00.png"))

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and len({r["item"] for r in records}) == 6
    assert sorted(r["file"] for r in records if r["status"] == "done") == [f.name for f in files]
    assert sorted(r["row"] for r in records if r["status"] == "failed") == [3, 4, 5]
    done = [r for r in records if r["status"] == "done"]
    assert all(r["drawn"] and r["seconds"] > 0 and set(r["times"]) == {"encode", "sample", "decode", "write"}
               for r in done)
    # one encoding per prompt: the second fox item found the first one's
    assert sorted(r["encoded"] for r in done) == [False, True, True]

    (out / fox.name).unlink()
    seen = []
    report = hy.render(job, model=tiny_official, out=out, workers=0, progress=seen.append)
    assert (report.rendered, report.skipped, report.failed, report.total) == (1, 2, 3, 6)
    assert np.array_equal(pixels(out / fox.name), pixels(tmp_path / "gen" / "hunyuan_3_00.png"))
    assert [(p.done, p.failed, p.total) for p in seen] == [(3, 3, 6)] and seen[0].eta_seconds == 0
    again = hy.render(job, model=tiny_official, out=out, workers=0)
    assert (again.rendered, again.skipped) == (0, 3)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in out.iterdir()) == sorted([f.name for f in files] + ["manifest.jsonl",
                                                                                      "manifest.jsonl.lock"])


def test_workers_without_ray_say_how_to_install(tiny_official, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    job = write_jsonl(tmp_path / "job.jsonl", [{"prompt": "x", "width": 64, "height": 64}])
    with pytest.raises(InputError, match=r"Ray is not installed: pip install 'ray\[data\]'.*--workers 0"):
        hy.render(job, model=tiny_official, out=tmp_path / "out", workers=2)
    assert not list((tmp_path / "out").glob("*.png"))


def test_job_file_errors(tiny_official, tmp_path):
    with pytest.raises(InputError, match="a job is a .jsonl or .csv file"):
        hy.render(tmp_path / "job.txt", model=tiny_official, out=tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        hy.render(tmp_path / "job.jsonl", model=tiny_official, out=tmp_path / "out")
    job = write_jsonl(tmp_path / "job.jsonl", [{"prompt": "x"}])
    with pytest.raises(InputError, match="workers must be at least 0"):
        hy.render(job, model=tiny_official, out=tmp_path / "out", workers=-1)
    assert GenerationParams("x").seed == 42 == read_job(job, **JOB).items[0].params.seed
