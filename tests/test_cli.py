"""The hunyuan-dit command: generate on a fresh machine (--model tiny), make-tiny, one-line errors, help and
defaults, img2img / inpainting, PNG parameters (--from-png redraws the same pixels, info prints them)."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hunyuan_core as hy
from hunyuan_core import pipeline
from hunyuan_core.cli import build_parser, main
from hunyuan_core.metadata import read_params


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
    assert main(args) == 0  # comfy: the hydit_clip_tokenizer/ that make-tiny wrote beside the file is found


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
    assert "nearest valid size: 96x256" in capsys.readouterr().err  # the tiny model's default height


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


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _only_png(folder):
    (png,) = Path(folder).glob("*.png")
    return png


def _refuse_loading(monkeypatch):
    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr("hunyuan_core.tiny.make_tiny", lambda *a, **k: pytest.fail("the tiny model was built"))


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hunyuan-dit {hy.__version__}"  # = pyproject's (test_packaging)


def _subparsers(parser):
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_of_every_command_has_help():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"


def test_help_shows_defaults_and_the_per_model_ones():
    commands = _subparsers(build_parser())
    generate = " ".join(commands["generate"].format_help().split())
    assert "default: 1024, 256 for --model tiny" in generate
    assert "(default: 50, 4 for --model tiny)" in generate
    assert "pictures per run (default: 1)" in generate
    assert "(default: None)" not in generate and "(default: False)" not in generate
    tiny = " ".join(commands["make-tiny"].format_help().split())
    assert "--release {1.2,1.1}" in tiny and "(default: 1.2)" in tiny and "--version" not in tiny


def test_tiny_defaults_to_256_and_4_steps(tmp_path, capsys):
    assert main(["generate", "--model", "tiny", "--prompt", "猫", "--out", str(tmp_path)]) == 0
    assert Image.open(_only_png(tmp_path)).size == (256, 256)
    assert "4/4" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "  "], "the prompt is empty"),
    (["--prompt", "猫", "--steps", "0"], "steps"),
    (["--prompt", "猫", "--strength", "0.5"], "--mask and --strength need --image"),
    (["--prompt", "猫", "--image", "missing.png"], "cannot read image 'missing.png'"),
    ([], "generate needs --prompt (or --from-png IMG"),
])
def test_bad_settings_are_refused_before_loading(tmp_path, capsys, monkeypatch, extra, message):
    _refuse_loading(monkeypatch)
    assert main(["generate", "--model", "tiny", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_all_in_one_without_vocab_names_the_cli_flag(tiny_comfy, tmp_path, capsys):
    alone = tmp_path / "alone.safetensors"
    shutil.copyfile(tiny_comfy, alone)
    assert main(["generate", "--model", str(alone), "--prompt", "猫", "--width", "64", "--height", "64",
                 "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no 'hydit_clip_tokenizer/' folder beside it" in err and "pass --bert-vocab" in err


def test_make_tiny_and_convert_say_they_wrote_the_bert_folder(tiny_official, tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path / "t"), "--layout", "comfy", "--release", "1.1"]) == 0
    assert f"'{tmp_path / 't' / 'hydit_clip_tokenizer'}/'" in capsys.readouterr().err
    assert main(["convert", "--model", str(tiny_official), "--layout", "comfy", "--out", str(tmp_path / "c")]) == 0
    assert f"'{tmp_path / 'c' / 'hydit_clip_tokenizer'}/'" in capsys.readouterr().err


def test_img2img_and_inpainting_match_the_python_api(tiny_official, tmp_path):
    source = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    source.save(tmp_path / "in.png")
    mask = Image.new("L", (80, 64))
    mask.paste(255, (40, 0, 80, 64))
    mask.save(tmp_path / "mask.png")
    pipe = hy.load_pipeline(tiny_official, device="cpu")
    common = ["--model", str(tiny_official), "--prompt", "猫", "--steps", "3", "--seed", "9", "--device", "cpu"]
    assert main(["generate", *common, "--image", str(tmp_path / "in.png"), "--strength", "0.5",
                 "--out", str(tmp_path / "i2i")]) == 0
    got = _only_png(tmp_path / "i2i")
    want = pipe("猫", width=80, height=64, steps=3, seed=9, image=source, strength=0.5).images[0]
    assert Image.open(got).size == (80, 64)  # the --image's size
    assert np.array_equal(_pixels(got), np.asarray(want, dtype=np.int16))
    assert main(["generate", *common, "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--out", str(tmp_path / "inpaint")]) == 0
    want = pipe("猫", width=80, height=64, steps=3, seed=9, image=source, mask=mask, strength=0.8).images[0]
    got = _pixels(_only_png(tmp_path / "inpaint"))
    assert np.array_equal(got, np.asarray(want, dtype=np.int16))
    params = read_params(_only_png(tmp_path / "inpaint"))
    assert (params.image, params.mask, params.strength) == (str(tmp_path / "in.png"), str(tmp_path / "mask.png"), 0.8)


def test_image_size_is_rounded_to_16_with_a_note(tmp_path, capsys):
    Image.new("RGB", (90, 70), (200, 10, 10)).save(tmp_path / "in.png")
    assert main(["generate", "--model", "tiny", "--prompt", "猫", "--steps", "1", "--image", str(tmp_path / "in.png"),
                 "--out", str(tmp_path / "o")]) == 0
    assert Image.open(_only_png(tmp_path / "o")).size == (96, 64)
    assert "note: the input image is 90x70; it is resized to 96x64" in capsys.readouterr().err


def test_every_png_carries_its_own_parameters(tmp_path):
    assert main(["generate", "--model", "tiny", "--prompt", "一只猫", "--width", "64", "--height", "80", "--steps", "2",
                 "--batch", "2", "--seed", "5", "--cfg", "4.5", "--sampler", "euler", "--out", str(tmp_path)]) == 0
    first, second = sorted(tmp_path.glob("*.png"))
    for png, seed in ((first, 5), (second, 6)):
        params = read_params(png)
        assert (params.prompt, params.seed, params.width, params.height, params.steps, params.guidance_scale,
                params.sampler, params.model) == ("一只猫", seed, 64, 80, 2, 4.5, "euler", "tiny")
        assert params.model_hash is None  # the tiny model is rebuilt, not a file
        assert (params.batch_size, params.batch_index) == (2, seed - 5)
        text = Image.open(png).info["parameters"]
        assert text.startswith("一只猫\nNegative prompt: ")
        assert (f"Steps: 2, Sampler: euler, CFG scale: 4.5, Seed: {seed}, Size: 64x80, Batch size: 2, "
                f"Batch pos: {seed - 5}, Model: tiny, Version: hunyuan-dit ") in text


def test_from_png_redraws_the_same_pixels(tiny_official, tmp_path, capsys):
    from lora_files import write_kohya

    lora = write_kohya(tmp_path / "k.safetensors", hy.load_dit(tiny_official, device="cpu", dtype="fp32"))[0]
    Image.new("RGB", (64, 64), (20, 120, 220)).save(tmp_path / "in.png")
    assert main(["generate", "--model", str(tiny_official), "--prompt", "水墨画，山间小屋", "--negative", "模糊",
                 "--steps", "3", "--batch", "2", "--seed", "11", "--sampler", "euler_ancestral", "--cfg", "5",
                 "--guidance-rescale", "0.5", "--beta-end", "0.02", "--lora", f"{lora}:0.6",
                 "--image", str(tmp_path / "in.png"), "--strength", "0.7", "--out", str(tmp_path / "a")]) == 0
    second = sorted((tmp_path / "a").glob("*.png"))[1]
    assert main(["generate", "--from-png", str(second), "--out", str(tmp_path / "b")]) == 0
    again = _only_png(tmp_path / "b")
    assert np.array_equal(_pixels(again), _pixels(second))
    assert read_params(again) == read_params(second)
    assert "warning" not in capsys.readouterr().err
    # an option given with --from-png replaces the PNG's; another model's hash is reported
    assert main(["generate", "--from-png", str(second), "--model", "tiny", "--out", str(tmp_path / "c")]) == 0
    assert "the pixels will differ" in capsys.readouterr().err
    assert read_params(_only_png(tmp_path / "c")).model == "tiny"


def test_info_prints_the_parameters(tmp_path, capsys):
    assert main(["generate", "--model", "tiny", "--prompt", "猫\x1b]0;pwned\x07", "--width", "64", "--height", "64",
                 "--steps", "1", "--out", str(tmp_path)]) == 0
    png = _only_png(tmp_path)
    capsys.readouterr()
    assert main(["info", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("猫\nNegative prompt: ") and "\x1b" not in out  # a file's text, escapes removed
    assert "Steps: 1, Sampler: ddpm, CFG scale: 6, Seed: 42, Size: 64x64" in out
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert main(["info", str(tmp_path / "plain.png")]) == 2
    assert "carries no Hunyuan-DiT parameters" in capsys.readouterr().err
