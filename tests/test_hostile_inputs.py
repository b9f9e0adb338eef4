"""Hostile sampling, upscaling and node inputs (issue 8): each is refused with the project's own error, saying
what was expected and what was found, before any work starts; numerics that go bad say why.

New modules are imported inside the tests, so that on code without them each test fails on its own.
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import pytest
import torch
from comfy_host import require_comfyui
from comfy_host import run_node as call_node
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

import hunyuan_core as hy
from hunyuan_core.errors import InputError, NumericsError
from hunyuan_core.upscaler import load_upscaler

PROMPT = "一只戴着墨镜的柴犬 a shiba inu"
SMALL = dict(width=64, height=64, steps=2, seed=1)


class Started(Exception):
    """Raised by a ``cancel`` callback: the run got past every check and started working."""


def started() -> None:
    raise Started


@pytest.fixture(scope="module")
def pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def texts(pipe):
    return pipe.encode_prompt(PROMPT), pipe.encode_prompt("", negative=True)


@pytest.fixture(scope="module")
def rrdb4():
    from test_upscaler import rrdb_weights

    return load_upscaler(rrdb_weights(4), device="cpu")


def broken_dit(pipe, dtype=torch.float32):
    """A copy of the tiny DiT with one NaN weight (what a damaged file or an fp16 overflow leads to)."""
    dit = copy.deepcopy(pipe.dit).to(dtype)
    with torch.no_grad():
        dit.final_layer.linear.weight[0, 0] = float("nan")
    return dit


# ------------------------------------------------------------------------------ 1. scalar settings
@pytest.mark.parametrize("bad, match", [
    (dict(seed=2**70), r"seed must be between 0 and 18446744073709551615, found 1180591620717411303424"),
    (dict(seed=-1), r"seed must be between 0 and \d+, found -1"),
    (dict(seed=2**64 - 1, batch_size=2), r"seeds up to 18446744073709551616"),
    (dict(seed=True), r"seed must be an integer, found True \(bool\)"),
    (dict(steps="3"), r"steps .*must be an integer, found '3' \(str\)"),
    (dict(steps=2.5), r"steps .*must be an integer, found 2.5 \(float\)"),
    (dict(steps=True), r"steps .*must be an integer, found True \(bool\)"),
    (dict(batch_size=0), r"batch_size must be at least 1, found 0"),
    (dict(batch_size="2"), r"batch_size must be an integer, found '2' \(str\)"),
    (dict(guidance_scale=math.inf), r"guidance_scale must be a finite number in \[0, 100\], found inf"),
    (dict(guidance_scale=math.nan), r"guidance_scale must be a finite number in \[0, 100\], found nan"),
    (dict(guidance_scale=1e30), r"guidance_scale .*found 1e\+30"),
    (dict(guidance_scale=True), r"guidance_scale must be a number, found True \(bool\)"),
    (dict(guidance_rescale=1.5), r"guidance_rescale must be a finite number in \[0, 1\], found 1.5"),
    (dict(guidance_rescale=-0.1), r"guidance_rescale .*found -0.1"),
    (dict(guidance_rescale=math.nan), r"guidance_rescale .*found nan"),
    (dict(beta_end=0.0), r"beta_end must be a finite number in \(0, 1\), found 0.0"),
    (dict(beta_end=1.0), r"beta_end .*found 1.0"),
    (dict(beta_end=math.nan), r"beta_end .*found nan"),
    (dict(beta_end=0.0005), r"beta_end must be larger than the schedule's beta_start 0.00085, found 0.0005"),
    (dict(sampler=None), r"unknown sampler None"),
])
def test_bad_scalars_are_refused_by_the_pipeline_and_by_sample(pipe, texts, bad, match):
    with pytest.raises(InputError, match=match):
        pipe(PROMPT, **{**SMALL, **bad}, cancel=started)
    with pytest.raises(InputError, match=match):
        hy.sample(pipe.dit, *texts, **{**SMALL, **bad}, cancel=started)


@pytest.mark.parametrize("strength", [math.nan, "0.5", 0.0, 1.5])
def test_bad_img2img_strength(pipe, strength):
    image = Image.new("RGB", (64, 64), (90, 20, 200))
    with pytest.raises(InputError, match=r"strength \(denoise\) must be"):
        pipe(PROMPT, **SMALL, image=image, strength=strength, cancel=started)


@pytest.mark.parametrize("image", [Image.new("RGB", (0, 0)), Image.new("RGB", (64, 0)), torch.zeros(1, 3, 0, 0)])
def test_empty_init_image_or_mask(pipe, image):
    with pytest.raises(InputError, match="the image is empty"):
        pipe(PROMPT, **SMALL, image=image, cancel=started)
    with pytest.raises(InputError, match="the mask is empty"):
        pipe(PROMPT, **SMALL, image=Image.new("RGB", (64, 64)), mask=image, cancel=started)


def test_negative_prompt_list_of_another_length(pipe, texts):
    with pytest.raises(InputError, match="negative_prompt has 3 entries for 2 prompts"):
        pipe([PROMPT, "猫"], negative_prompt=["a", "b", "c"], **SMALL, cancel=started)
    negatives = pipe.encode_prompt(["a", "b", "c"], negative=True)
    with pytest.raises(InputError, match="3 negative prompt encodings for 2 prompts"):
        hy.sample(pipe.dit, pipe.encode_prompt([PROMPT, "猫"]), negatives, **SMALL, cancel=started)
    # one negative for all prompts, or one per prompt, still run
    out = pipe([PROMPT, "猫"], negative_prompt=["a", "b"], **SMALL, batch_size=2)
    assert out.latents.shape[0] == 4 and out.seeds == [1, 2, 3, 4]


@pytest.mark.parametrize("prompt", [None, 5, [], [PROMPT, 3]])
def test_prompt_that_is_not_text(pipe, prompt):
    with pytest.raises(InputError, match="prompt must be a string or a non-empty list of strings"):
        pipe(prompt, **SMALL, cancel=started)


def test_load_pipeline_checks_beta_end_before_reading_anything(tmp_path):
    for beta_end in (0.0, 1.0, math.nan, -0.5):
        with pytest.raises(InputError, match="beta_end"):
            hy.load_pipeline(tmp_path / "not-read", beta_end=beta_end)


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=3),
                       st.lists(st.integers(), max_size=2), st.complex_numbers()),
       name=st.sampled_from(["width", "height", "steps", "guidance_scale", "guidance_rescale", "seed",
                             "batch_size", "strength", "beta_end", "sampler"]))
@example(value=2**64 + 1, name="batch_size")  # once named the seeds it would need instead of the batch
def test_any_value_of_any_setting_is_accepted_or_an_input_error(name, value):
    from hunyuan_core.settings.validate import check_sampling

    good = dict(width=64, height=64, steps=2, guidance_scale=6.0, guidance_rescale=0.0, sampler="ddpm", seed=0,
                batch_size=1, strength=1.0, beta_end=None)
    try:
        check_sampling(**{**good, name: value})
    except InputError as exc:
        assert name.split("_")[0] in str(exc) or "size" in str(exc)


# ------------------------------------------------------------------------------------- 2. steps
def test_every_sampler_runs_to_the_end_at_its_step_limit():
    """The limits are real: each sampler's full loop at its limit finishes with finite latents."""
    from hunyuan_core.sampling.schedulers import SAMPLERS, make_scheduler
    from hunyuan_core.settings.limits import MAX_STEPS, TRAIN_TIMESTEPS

    assert set(MAX_STEPS) == set(SAMPLERS) and max(MAX_STEPS.values()) == TRAIN_TIMESTEPS
    g = torch.Generator().manual_seed(0)
    for name in SAMPLERS:
        s = make_scheduler(name, 0.00085, 0.018)
        s.set_timesteps(MAX_STEPS[name])
        x = torch.randn(1, 4, 2, 2, generator=g) * s.init_noise_sigma
        extra = {"generator": g} if "generator" in inspect.signature(s.step).parameters else {}
        for t in s.timesteps:
            model_out = 0.1 * torch.randn(1, 4, 2, 2, generator=g)
            x = s.step(model_out, t, s.scale_model_input(x, t), **extra).prev_sample
        assert torch.isfinite(x).all(), name


@pytest.mark.parametrize("sampler, steps, limit", [
    ("ddpm", 1000, 999), ("ddim", 1000, 999), ("ddpm", 5000, 999), ("dpmms", 1000, 999), ("unipc", 1000, 999),
    ("euler", 1001, 1000), ("euler_ancestral", 1001, 1000), ("dpmpp_2m_karras", 1001, 1000),
])
def test_steps_beyond_the_schedule_are_refused_with_the_limit(pipe, sampler, steps, limit):
    with pytest.raises(InputError, match=rf"steps for sampler '{sampler}' must be between 1 and {limit}, found {steps}"):
        pipe(PROMPT, width=64, height=64, steps=steps, sampler=sampler, cancel=started)


def test_the_edge_itself_starts_sampling(pipe):
    for sampler, steps in (("ddpm", 999), ("euler", 1000)):
        with pytest.raises(Started):
            pipe(PROMPT, width=64, height=64, steps=steps, sampler=sampler, cancel=started)


# ------------------------------------------------------------------------------------ 3. oversized
def test_4096_square_with_batch_16_is_refused_before_sampling(pipe):
    with pytest.raises(InputError, match=r"4096x4096 px x 32 images per step .* 2,097,152 latent tokens per step; "
                                         r"the limit is 1,048,576"):
        pipe(PROMPT, width=4096, height=4096, batch_size=16, steps=2, cancel=started)


def test_work_beyond_the_free_memory_is_refused(pipe, monkeypatch):
    import hunyuan_core.settings.validate as validate

    monkeypatch.setattr(validate, "free_memory", lambda device: 2**20)
    with pytest.raises(InputError, match=r"1024x1024 px x 2 images per step needs about .* GiB .* on cpu; 0.0 GiB"):
        pipe(PROMPT, width=1024, height=1024, steps=2, cancel=started)
    monkeypatch.setattr(validate, "free_memory", lambda device: 2**40)
    with pytest.raises(Started):
        pipe(PROMPT, width=1024, height=1024, steps=2, cancel=started)


def test_upscale_to_44000_px_is_refused_before_the_first_tile(rrdb4):
    strip = torch.rand(1, 3, 1, 11000)
    with pytest.raises(InputError, match=r"11000x1 px x4 would give 44000x4 px .* limit is 32768 px per side"):
        rrdb4(strip, cancel=started)
    with pytest.raises(InputError, match=r"1100x1100 px x16 would give 17600x17600 px \(310 MP\).* 268 MP"):
        rrdb4(torch.rand(1, 3, 1100, 1100), scale=16, cancel=started)
    with pytest.raises(InputError, match="44000"):  # a list: refused before the first (small) image runs
        rrdb4([Image.new("RGB", (8, 8)), Image.new("RGB", (11000, 2))], cancel=started)


def test_empty_image_to_the_upscaler(rrdb4):
    with pytest.raises(InputError, match=r"cannot upscale an empty image \(0x0 px\)"):
        rrdb4(Image.new("RGB", (0, 0)))
    with pytest.raises(InputError, match=r"empty image \(5x0 px\)"):
        rrdb4([Image.new("L", (5, 0))])


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_image_stays_16_bit(rrdb4, mode):
    ramp = (np.linspace(0, 65535, 7 * 5).reshape(5, 7)).astype(np.uint16)
    deep = Image.fromarray(ramp).convert(mode) if mode != "I;16" else Image.fromarray(ramp)
    out = rrdb4(deep)
    assert out.mode == mode and out.size == (28, 20)
    values = np.asarray(out).astype(np.int64)
    assert values.max() > 255 and (values % 257 != 0).any()  # real 16-bit values, not 8-bit ones scaled up
    assert [i.mode for i in rrdb4([deep, Image.new("L", (3, 3))])] == [mode, "L"]


# ----------------------------------------------------------------------------------- 4. numerics
def test_non_finite_weights_raise_a_numerics_error_at_the_first_step(pipe, texts):
    steps_seen = []
    with pytest.raises(NumericsError, match=r"NaN/Inf latents at step 1 of 3 .* float32 weights .* hold NaN/Inf"):
        hy.sample(broken_dit(pipe), *texts, width=64, height=64, steps=3, seed=1,
                  progress=lambda i, n, x: steps_seen.append(i))
    assert steps_seen == []


def test_fp16_overflow_is_named_and_bf16_suggested(pipe, texts):
    with pytest.raises(NumericsError, match=r"runs in fp16 on cpu.*dtype bf16 \(or fp32\)"):
        hy.sample(broken_dit(pipe, torch.float16), *texts, width=64, height=64, steps=2, seed=1)


@pytest.mark.parametrize("field", ["latents", "init_latents", "mask"])
def test_non_finite_latents_and_masks_are_input_errors(pipe, texts, field):
    value = torch.zeros(1, 4, 8, 8) if field != "mask" else torch.ones(64, 64)
    value.view(-1)[5] = float("inf") if field == "latents" else float("nan")
    extra = {field: value}
    if field == "mask":
        extra["init_latents"] = torch.zeros(1, 4, 8, 8)
    name = field.replace("_", " ")
    with pytest.raises(InputError, match=rf"{name} must be finite; found 1 NaN/Inf values"):
        hy.sample(pipe.dit, *texts, **SMALL, **extra, cancel=started)


# ------------------------------------------------------------------------------------ 5. devices
@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps", "gpu0", "xpu", "meta", 3])
def test_unavailable_or_unknown_devices_name_the_available_ones(no_gpu, device):
    from hunyuan_core.settings.devices import resolve_device

    with pytest.raises(InputError, match=rf"device '{device}' is not available on this machine; expected one of: cpu$"):
        resolve_device(device)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("privateuseone:0") == torch.device("privateuseone:0")  # ComfyUI's DirectML: passes


def test_a_cuda_index_that_does_not_exist(monkeypatch):
    from hunyuan_core.settings.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match="device 'cuda:7' .* expected one of: cpu, cuda, cuda:0, cuda:1"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_loaders_and_the_upscaler_refuse_a_missing_gpu_before_reading(no_gpu, tiny_diffusers):
    with pytest.raises(InputError, match="device 'cuda' is not available"):
        hy.load_pipeline(tiny_diffusers, device="cuda")
    from test_upscaler import rrdb_weights

    with pytest.raises(InputError, match="device 'cuda' is not available"):
        load_upscaler(rrdb_weights(4), device="cuda")


@pytest.mark.parametrize("args, match", [
    (["--device", "cuda"], "device 'cuda' is not available on this machine; expected one of: cpu"),
    (["--seed", "-1"], "seed must be between 0 and 18446744073709551615, found -1"),
    (["--steps", "1000"], "steps for sampler 'ddpm' must be between 1 and 999, found 1000"),
    (["--cfg", "nan"], "guidance_scale must be a finite number"),
    (["--beta-end", "1"], "beta_end must be a finite number in (0, 1)"),
    (["--width", "4096", "--height", "4096", "--batch", "16"], "latent tokens per step"),
])
def test_cli_refuses_bad_generate_arguments_in_one_line_before_building_a_model(no_gpu, monkeypatch, capsys, args,
                                                                                match):
    from hunyuan_core import cli, tiny

    monkeypatch.setattr(tiny, "make_tiny", lambda *a, **k: pytest.fail("a model was built"))
    assert cli.main(["generate", "--model", "tiny", "--prompt", "猫", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err


# -------------------------------------------------------------------------------------- 6. nodes
@pytest.fixture
def handles(pipe):
    require_comfyui()
    from nodes._common import ModelHandle, TextEncoderHandle

    return (ModelHandle(pipe.dit), TextEncoderHandle(pipe.text_encoder))


@pytest.fixture
def shown(monkeypatch):
    from nodes import host

    texts = []
    monkeypatch.setattr(host, "show_text", lambda node_id, text, *a, **k: texts.append((node_id, text)))
    return texts


NODE_SMALL = dict(resolution="custom (width x height below)", width=64, height=64, steps=2, cfg=6.0,
                  guidance_rescale=0.0, sampler_name="ddpm", seed=1, batch_size=1, denoise=1.0)


@pytest.mark.parametrize("positive", ["", "   \n\t "])
def test_encode_node_warns_on_an_empty_positive_prompt(handles, shown, positive):
    from nodes.conditioning import HunyuanDiTTextEncode

    _, ui = call_node(HunyuanDiTTextEncode, unique_id="4", text_encoder=handles[1], positive=positive, negative="")
    assert len(ui["text"]) == 1 and ui["text"][0].startswith("The positive prompt is empty")
    assert shown == [("4", ui["text"][0])]
    _, ui = call_node(HunyuanDiTTextEncode, unique_id="4", text_encoder=handles[1], positive="猫", negative="")
    assert ui.get("text") == []


def test_sampler_node_skips_an_all_zero_mask_with_a_warning(handles, shown, monkeypatch):
    import nodes.sampling
    from nodes.conditioning import HunyuanDiTTextEncode

    (pos, neg), _ = call_node(HunyuanDiTTextEncode, text_encoder=handles[1], positive="猫", negative="")
    monkeypatch.setattr(nodes.sampling, "sample_latents", lambda *a, **k: pytest.fail("sampled for nothing"))
    latent = {"samples": torch.randn(2, 4, 8, 8)}
    (out,), ui = call_node(nodes.sampling.HunyuanDiTSampler, unique_id="9", model=handles[0], positive=pos,
                           negative=neg, latent=latent, mask=torch.zeros(2, 64, 64), **{**NODE_SMALL, "batch_size": 2})
    assert "all zero" in ui["text"][0] and shown == [("9", ui["text"][0])]
    torch.testing.assert_close(out["samples"], latent["samples"].repeat_interleave(2, dim=0))


def test_sampler_node_reports_non_finite_latents_on_the_node(pipe, handles, shown):
    from nodes._common import ModelHandle
    from nodes.conditioning import HunyuanDiTTextEncode
    from nodes.sampling import HunyuanDiTSampler

    (pos, neg), _ = call_node(HunyuanDiTTextEncode, text_encoder=handles[1], positive="猫", negative="")
    broken = ModelHandle(broken_dit(pipe))
    with pytest.raises(NumericsError, match="NaN/Inf latents"):
        call_node(HunyuanDiTSampler, unique_id="3", model=broken, positive=pos, negative=neg, **NODE_SMALL)
    assert len(shown) == 1 and shown[0][0] == "3" and "HunyuanDiT Sampler: sampling produced NaN/Inf" in shown[0][1]
