"""Hostile and unlucky users against the files the CLI writes (issue 8, "Data loss"): convert into its own
source, the same seed twice, two inputs with one stem, Ctrl-C mid-write, a FIFO among the inputs, a bad
``--out`` or ``--upscale`` found only after sampling, a disk that fills up at the end, OSErrors on user paths.
"""

import errno
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from hunyuan_core.cli import main
from hunyuan_core.tiny import make_tiny, tiny_bert_vocab_path
from hunyuan_core.upscaler.tiny import make_tiny_upscaler

CLI = [sys.executable, "-m", "hunyuan_core.cli"]
ROOT = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("hunyuan-dit: error:"), err
    assert "Traceback" not in err, err
    return lines[-1]


def generate_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", "猫", "--width", "64", "--height", "64", "--steps", "1",
            "--seed", "42", "--out", str(out), *extra]


@pytest.fixture
def no_dit(monkeypatch):
    """Loading the DiT fails the test: what is checked here must be refused before it."""
    import hunyuan_core.pipeline

    def refuse(*_, **__):
        raise AssertionError("the DiT was loaded before the arguments were checked")

    monkeypatch.setattr(hunyuan_core.pipeline, "load_pipeline", refuse)


# 1. convert never writes into the model it reads; every file lands whole; --overwrite for existing outputs

def test_convert_into_its_own_all_in_one_file_keeps_the_source(tmp_path):
    source = make_tiny(tmp_path / "m", "comfy")
    before = tree_digest(tmp_path / "m")
    run = subprocess.run([*CLI, "convert", "--model", str(source), "--layout", "comfy", "--out", str(source),
                          "--bert-vocab", str(tiny_bert_vocab_path(tmp_path / "m"))],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2, run.stderr  # before: killed by SIGBUS (-7) or the weights truncated
    assert "is being read" in error_line(run.stderr)
    assert tree_digest(tmp_path / "m") == before


@pytest.mark.parametrize("case", ["same folder", "inside the source", "contains the source", "contains the vocab"])
def test_convert_refuses_an_output_that_overlaps_an_input(tmp_path, capsys, case):
    model = make_tiny(tmp_path / "m", "diffusers" if case != "contains the vocab" else "comfy")
    vocab = tmp_path / "vocab" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("[PAD]\n[UNK]\n")
    out = {"same folder": model, "inside the source": model / "transformer" / "new",
           "contains the source": tmp_path, "contains the vocab": vocab.parent}[case]
    before = tree_digest(tmp_path)
    args = ["convert", "--model", str(model), "--layout", "comfy" if case == "contains the vocab" else "diffusers",
            "--out", str(out)] + (["--bert-vocab", str(vocab)] if case == "contains the vocab" else [])
    for extra in ([], ["--overwrite"]):
        assert main(args + extra) == 2
        assert f"output '{out}' would overwrite the input" in error_line(capsys.readouterr().err)
        assert tree_digest(tmp_path) == before


def test_convert_does_not_replace_an_existing_model_without_overwrite(tiny_official, tmp_path, capsys):
    args = ["convert", "--model", str(tiny_official), "--layout", "diffusers", "--out", str(tmp_path / "d")]
    assert main(args) == 0
    before = tree_digest(tmp_path / "d")
    (tmp_path / "d" / "my-notes.txt").write_text("mine")
    assert main(args) == 2
    assert "not replacing it (pass --overwrite" in error_line(capsys.readouterr().err)
    assert tree_digest(tmp_path / "d") == before | {"my-notes.txt": digest(tmp_path / "d" / "my-notes.txt")}
    assert main(args + ["--overwrite"]) == 0


def test_convert_comfy_file_needs_overwrite_and_lands_whole(tiny_official, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    target = tmp_path / "hunyuan.safetensors"
    args = ["convert", "--model", str(tiny_official), "--layout", "comfy", "--out", str(target)]
    assert main(args) == 0
    before = tree_digest(tmp_path)
    assert main(args) == 2
    assert f"output '{target}' already exists" in error_line(capsys.readouterr().err)

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    assert main(args + ["--overwrite"]) == 130  # Ctrl-C while the weights are written
    assert tree_digest(tmp_path) == before  # the old model whole, no temporary file left


def test_make_tiny_twice_needs_overwrite(tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path / "m"), "--layout", "diffusers"]) == 0
    before = tree_digest(tmp_path / "m")
    assert main(["make-tiny", str(tmp_path / "m"), "--layout", "diffusers", "--seed", "1"]) == 2
    assert "not replacing it" in error_line(capsys.readouterr().err)
    assert tree_digest(tmp_path / "m") == before
    assert main(["make-tiny", str(tmp_path / "m"), "--layout", "diffusers", "--seed", "1", "--overwrite"]) == 0
    assert tree_digest(tmp_path / "m") != before


def test_make_tiny_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["make-tiny", str(tmp_path / "f" / "m")]) == 2
    assert "hunyuan-dit: error:" in error_line(capsys.readouterr().err)


def test_tiny_writers_land_whole_files(tmp_path, monkeypatch):
    import torch
    from transformers import LlamaForCausalLM

    from hunyuan_core.rewriter.tiny import make_tiny_chat_llm

    sr = make_tiny_upscaler(tmp_path / "sr" / "x4.pth")
    llm = make_tiny_chat_llm(tmp_path / "llm")
    before = tree_digest(tmp_path)

    def interrupted(obj, f, *_, **__):
        Path(f).write_bytes(b"half")
        raise KeyboardInterrupt

    def interrupted_pretrained(self, folder, *_, **__):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", interrupted_pretrained)
    with pytest.raises(KeyboardInterrupt):
        make_tiny_upscaler(sr, seed=1)
    with pytest.raises(KeyboardInterrupt):
        make_tiny_chat_llm(llm, seed=1)
    assert tree_digest(tmp_path) == before  # old files whole, no temporary file or staging folder left
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


# 2. generate never replaces a picture unless told to; Ctrl-C mid-write keeps the old one

def test_generate_twice_with_one_seed_keeps_both_pictures(tiny_official, tmp_path, capsys):
    assert main(generate_args(tiny_official, tmp_path)) == 0
    first = digest(tmp_path / "hunyuan_42_00.png")
    capsys.readouterr()
    assert main(generate_args(tiny_official, tmp_path)) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "hunyuan_42_00_00001_.png")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hunyuan_42_00.png", "hunyuan_42_00_00001_.png"]
    assert digest(tmp_path / "hunyuan_42_00.png") == first
    assert main(generate_args(tiny_official, tmp_path, "--overwrite")) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "hunyuan_42_00.png")]
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("overwrite", [True, False])
def test_ctrl_c_while_saving_keeps_the_old_picture(tiny_official, tmp_path, monkeypatch, overwrite):
    (tmp_path / "hunyuan_42_00.png").write_bytes(b"the user's picture")

    def interrupted(im, fp, filename):
        fp.write(b"\x89PNG\r\n\x1a\n" + bytes(25))  # the 33-byte stub of the issue
        fp.flush()
        raise KeyboardInterrupt

    Image.init()  # register PIL's own writers first, so they do not replace this one
    monkeypatch.setitem(Image.SAVE, "PNG", interrupted)
    assert main(generate_args(tiny_official, tmp_path, *(["--overwrite"] if overwrite else []))) == 130
    assert [p.name for p in tmp_path.iterdir()] == ["hunyuan_42_00.png"]  # no stray temp or half file
    assert (tmp_path / "hunyuan_42_00.png").read_bytes() == b"the user's picture"


# 3. upscale: one stem, two inputs; only regular files; every input through images.open_image

@pytest.fixture(scope="module")
def sr_model(tmp_path_factory) -> Path:
    return make_tiny_upscaler(tmp_path_factory.mktemp("sr") / "x2.pth", architecture="SRVGGNetCompact", scale=2)


def test_upscale_photo_png_and_jpg_both_survive(sr_model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (8, 6), "red").save(src / "photo.png")
    Image.new("RGB", (10, 4), "blue").save(src / "photo.jpg")
    out = tmp_path / "out"
    assert main(["upscale", "--model", str(sr_model), str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "photo_x2.png"), str(out / "photo_x2_00001_.png")]
    assert {Image.open(p).size for p in printed} == {(16, 12), (20, 8)}
    assert main(["upscale", "--model", str(sr_model), str(src / "photo.png"), "--out", str(out), "--overwrite"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "photo_x2.png")]
    assert len(list(out.iterdir())) == 2


def test_upscale_skips_a_fifo_named_png_in_a_folder(sr_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    os.mkfifo(src / "stuck.png")
    Image.new("RGB", (8, 8), "green").save(src / "real.png")
    run = subprocess.run([*CLI, "upscale", "--model", str(sr_model), str(src), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)  # before: blocked forever
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / "out" / "real_x2.png")]


def test_upscale_refuses_a_fifo_named_explicitly(sr_model, tmp_path, capsys):
    os.mkfifo(tmp_path / "stuck.png")
    assert main(["upscale", "--model", str(sr_model), str(tmp_path / "stuck.png"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a regular image file" in error_line(capsys.readouterr().err)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb as far as a reader can tell)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_upscale_refuses_a_decompression_bomb_with_one_line(sr_model, tmp_path, capsys):
    png_header_only(tmp_path / "bomb.png", 30000, 30000)
    assert main(["upscale", "--model", str(sr_model), str(tmp_path / "bomb.png"), "--out", str(tmp_path / "o")]) == 2
    assert "bomb.png' looks like a decompression bomb" in error_line(capsys.readouterr().err)


# 4. every argument, the output folder and the --upscale model are checked before the DiT loads

def test_generate_out_that_is_a_file_fails_before_loading(tmp_path, capsys, no_dit):
    (tmp_path / "out").write_text("not a folder")
    assert main(generate_args(tmp_path / "model", tmp_path / "out")) == 2
    assert "is a file, not a folder" in error_line(capsys.readouterr().err)
    assert main(generate_args(tmp_path / "model", tmp_path / "out" / "sub")) == 2
    assert "cannot create output folder" in error_line(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["missing", "not a model", "truncated"])
def test_generate_bad_upscale_model_fails_before_loading(sr_model, tmp_path, capsys, no_dit, kind):
    bad = tmp_path / "sr.pth"
    if kind == "not a model":
        bad.write_text("hello")
    elif kind == "truncated":
        bad.write_bytes(sr_model.read_bytes()[: sr_model.stat().st_size // 2])
    assert main(generate_args(tmp_path / "model", tmp_path / "out", "--upscale", str(bad))) == 2
    assert str(bad) in error_line(capsys.readouterr().err)
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("failure", ["folder replaced by a file", "disk full"])
def test_generate_saves_to_a_fallback_folder_when_out_fails(tiny_official, tmp_path, capsys, monkeypatch, failure):
    from hunyuan_core.pipeline import HunyuanDiTPipeline

    out = tmp_path / "out"
    if failure == "folder replaced by a file":
        sample = HunyuanDiTPipeline.__call__

        def sample_then_lose_folder(self, *args, **kwargs):
            result = sample(self, *args, **kwargs)
            shutil.rmtree(out)
            out.write_text("someone put a file here")
            return result

        monkeypatch.setattr(HunyuanDiTPipeline, "__call__", sample_then_lose_folder)
    else:
        Image.init()
        save_png = Image.SAVE["PNG"]

        def full_disk(im, fp, filename):
            if Path(filename).parent == out:
                raise OSError(errno.ENOSPC, "No space left on device")
            save_png(im, fp, filename)

        monkeypatch.setitem(Image.SAVE, "PNG", full_disk)
    assert main(generate_args(tiny_official, out, "--batch", "2")) == 2
    captured = capsys.readouterr()
    line = error_line(captured.err)
    assert f"could not save into '{out}'" in line and "saved the remaining 2 image(s)" in line
    rescue = Path(re.search(r"in '([^']+)' instead", line)[1])
    try:
        assert sorted(p.name for p in rescue.iterdir()) == ["hunyuan_42_00.png", "hunyuan_43_01.png"]
        assert captured.out.split() == [str(rescue / "hunyuan_42_00.png"), str(rescue / "hunyuan_43_01.png")]
        assert Image.open(rescue / "hunyuan_43_01.png").size == (64, 64)
    finally:
        shutil.rmtree(rescue)


def test_upscale_checks_out_before_the_model(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "out").write_text("x")
    assert main(["upscale", "--model", str(tmp_path / "missing.pth"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "is a file, not a folder" in error_line(capsys.readouterr().err)


# 5. an OSError on a user's path is one line and exit 2; an OSError that names no path is a bug

def test_permission_error_on_a_user_path_is_one_line(tmp_path, capsys, monkeypatch):
    import hunyuan_core.formats.hashes
    import hunyuan_core.pipeline

    def unreadable(path, *_, **__):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(hunyuan_core.pipeline, "load_pipeline", unreadable)
    monkeypatch.setattr(hunyuan_core.formats.hashes, "model_hash", lambda *_: None)  # the PNG's hash reads it first
    assert main(generate_args(tmp_path / "model.safetensors", tmp_path / "out")) == 2
    assert error_line(capsys.readouterr().err) == f"hunyuan-dit: error: '{tmp_path / 'model.safetensors'}': Permission denied"


def test_oserror_without_a_path_still_shows_its_traceback(tmp_path, monkeypatch):
    import hunyuan_core.formats.hashes
    import hunyuan_core.pipeline

    def bug(*_, **__):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(hunyuan_core.pipeline, "load_pipeline", bug)
    monkeypatch.setattr(hunyuan_core.formats.hashes, "model_hash", lambda *_: None)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(generate_args(tmp_path / "model", tmp_path / "out"))


def test_stale_temps_of_a_killed_writer_are_removed_for_that_file_only(tmp_path):
    from hunyuan_core.outputs import remove_stale_temps

    target = tmp_path / "a[1].png"  # glob characters in the name are matched literally
    stale = [tmp_path / ".a[1].png.0123456789ab.tmp", tmp_path / ".a[1].png.ba9876543210.tmp"]
    others = [tmp_path / ".a1.png.0123456789ab.tmp", tmp_path / ".b.png.0123456789ab.tmp", tmp_path / "a[1].png"]
    for path in stale + others:
        path.write_bytes(b"x")
    assert remove_stale_temps(target) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
