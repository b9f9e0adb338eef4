"""The hunyuan-dit command: generate on a fresh machine (--model tiny), make-tiny, one-line errors."""

import subprocess
import sys

import pytest
from PIL import Image

from hunyuan_core.cli import main


def test_generate_with_tiny_model(tmp_path, capsys):
    code = main(["generate", "--model", "tiny", "--prompt", "一只猫", "--width", "64", "--height", "96",
                 "--steps", "2", "--batch", "2", "--seed", "5", "--out", str(tmp_path)])
    assert code == 0
    files = sorted(tmp_path.glob("*.png"))
    assert [f.name for f in files] == ["hunyuan_5_00.png", "hunyuan_6_01.png"]
    assert Image.open(files[0]).size == (64, 96)
    assert "2/2" in capsys.readouterr().err  # progress bar


@pytest.mark.parametrize("layout", ["official", "diffusers", "comfy"])
def test_make_tiny_then_generate(tmp_path, layout):
    assert main(["make-tiny", str(tmp_path / "m"), "--layout", layout]) == 0
    target = next(p for p in (tmp_path / "m").rglob("*") if p.suffix == ".safetensors") if layout == "comfy" else tmp_path / "m"
    args = ["generate", "--model", str(target), "--prompt", "cat", "--width", "64", "--height", "64", "--steps", "1",
            "--out", str(tmp_path / "o")]
    if layout == "comfy":
        from hunyuan_core.tiny import tiny_bert_vocab_path

        args += ["--bert-vocab", str(tiny_bert_vocab_path(tmp_path / "m"))]
    assert main(args) == 0


def test_bad_input_exits_nonzero_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "hunyuan_core.cli", "generate", "--model", str(tmp_path / "missing"), "--prompt", "x",
         "--out", str(tmp_path)], capture_output=True, text=True,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hunyuan-dit: error:") and "does not exist" in lines[0]


def test_size_error_is_one_line(tmp_path, capsys):
    assert main(["generate", "--model", "tiny", "--prompt", "x", "--width", "100", "--out", str(tmp_path)]) == 2
    assert "nearest valid size: 96x1024" in capsys.readouterr().err


def test_convert_command(tiny_official, tmp_path):
    import torch

    import hunyuan_core as hy

    assert main(["convert", "--model", str(tiny_official), "--layout", "diffusers", "--out", str(tmp_path / "d")]) == 0
    a = hy.load_dit(tiny_official, device="cpu").state_dict()
    b = hy.load_dit(tmp_path / "d", device="cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # tiny weights are fp16-exact, so fp16 storage loses nothing


def test_generate_then_upscale(tmp_path):
    from hunyuan_core.upscaler.tiny import make_tiny_upscaler

    sr = make_tiny_upscaler(tmp_path / "x2.pth", architecture="SRVGGNetCompact", scale=2)
    assert main(["generate", "--model", "tiny", "--prompt", "猫", "--width", "64", "--height", "64", "--steps", "1",
                 "--upscale", str(sr), "--out", str(tmp_path / "o")]) == 0
    assert Image.open(next((tmp_path / "o").glob("*.png"))).size == (128, 128)


def test_generate_schedule_and_bert_length_with_a_tqdm_bar(tmp_path, capsys):
    code = main(["generate", "--model", "tiny", "--prompt", "一只猫" * 40, "--width", "64", "--height", "64",
                 "--steps", "2", "--sampler", "heun", "--schedule", "karras", "--bert-length", "200",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and len(list(tmp_path.glob("*.png"))) == 1
    assert "sampling" in err and "3/3" in err and "[00:" in err  # heun's 2 steps are 3 model calls
    assert "BERT encoder" not in err
    assert main(["generate", "--model", "tiny", "--prompt", "x", "--sampler", "ddim", "--schedule", "karras",
                 "--out", str(tmp_path)]) == 2
    assert "sampler 'ddim' (diffusers DDIMScheduler) has no karras schedule" in capsys.readouterr().err
