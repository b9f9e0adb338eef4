"""Samplers (ComfyUI's KSampler names) and sigma schedules: each a diffusers scheduler, run by our loop exactly as
the diffusers scheduler runs by hand on the same denoiser; unsupported combinations refused before any work."""

import inspect
import re

import pytest
import torch

import hunyuan_core as hy
from hunyuan_core.errors import InputError
from hunyuan_core.sampling.denoiser import Denoiser
from hunyuan_core.sampling.schedulers import SAMPLERS, SCHEDULES, scheduler_settings

PROMPT = "一只戴着墨镜的柴犬 a shiba inu"
NEG = "模糊"
KSAMPLER_NAMES = ["heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                  "dpmpp_3m_sde", "deis", "lcm"]


@pytest.fixture(scope="module")
def pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def texts(pipe):
    return pipe.encode_prompt(PROMPT), pipe.encode_prompt(NEG, negative=True)


def run(pipe, texts, **kw):
    settings = {**dict(width=64, height=64, steps=3, seed=5, guidance_scale=5.0), **kw}
    return hy.sample(pipe.dit, *texts, **settings)


def test_the_ksampler_names_and_schedules_are_offered():
    assert set(KSAMPLER_NAMES) <= set(SAMPLERS) == set(hy.SAMPLERS)
    assert list(SCHEDULES) == ["default", "normal", "karras", "exponential", "beta", "simple", "sgm_uniform"]


@pytest.mark.parametrize("sampler", KSAMPLER_NAMES)
def test_each_new_sampler_runs_and_repeats_itself(pipe, texts, sampler):
    a, b = run(pipe, texts, sampler=sampler), run(pipe, texts, sampler=sampler)
    assert torch.isfinite(a).all() and a.shape == (1, 4, 8, 8)
    assert torch.equal(a, b)


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "default"])
def test_each_schedule_moves_the_steps_and_repeats_itself(pipe, texts, schedule):
    sampler = "euler" if "timestep_spacing" in SCHEDULES[schedule] else "dpmpp_2m_sde"
    a, b = run(pipe, texts, sampler=sampler, schedule=schedule), run(pipe, texts, sampler=sampler, schedule=schedule)
    assert torch.equal(a, b)
    assert not torch.allclose(a, run(pipe, texts, sampler=sampler), atol=1e-4)


# (our sampler, schedule) -> the diffusers class and flags, spelled out here independently of SAMPLER_FACTORY
BY_HAND = [
    ("heun", "karras", "HeunDiscreteScheduler", dict(use_karras_sigmas=True)),
    ("lms", "exponential", "LMSDiscreteScheduler", dict(use_exponential_sigmas=True)),
    ("dpm_2_ancestral", "beta", "KDPM2AncestralDiscreteScheduler", dict(use_beta_sigmas=True)),
    ("dpmpp_2m_sde", "simple", "DPMSolverMultistepScheduler",
     dict(algorithm_type="sde-dpmsolver++", solver_order=2, timestep_spacing="trailing")),
    ("dpmpp_2s_ancestral", "default", "DPMSolverSinglestepScheduler",
     dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    ("dpmpp_sde", "karras", "DPMSolverSDEScheduler", dict(use_karras_sigmas=True, noise_sampler_seed=5)),
    ("deis", "normal", "DEISMultistepScheduler", dict(timestep_spacing="linspace")),
]


@pytest.mark.parametrize("sampler, schedule, cls_name, flags", BY_HAND)
def test_equals_the_diffusers_scheduler_run_by_hand(tiny_diffusers, pipe, texts, sampler, schedule, cls_name, flags):
    """The diffusers pipeline loop (init sigma, scale input, denoise, step with the generator) written out, on the
    model folder's own scheduler config (with the classes' own linspace spacing instead of the DDPM's leading
    one), against our loop on the same denoiser and noise."""
    import diffusers

    config = diffusers.DDPMScheduler.from_pretrained(tiny_diffusers, subfolder="scheduler").config
    config = {**config, "timestep_spacing": "linspace", "steps_offset": 0}
    scheduler = getattr(diffusers, cls_name).from_config(config, **flags)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.beta_end == pytest.approx(0.018)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = run(pipe, texts, sampler=sampler, schedule=schedule, steps=4, latents=noise)

    denoiser = Denoiser(pipe.dit, *texts, width=64, height=64, guidance_scale=5.0)
    generator = torch.Generator().manual_seed(5)  # seed 5: image 0's generator, untouched as the noise is given
    scheduler.set_timesteps(4)
    x = noise * scheduler.init_noise_sigma
    step_args = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        x = scheduler.step(denoiser(scheduler.scale_model_input(x, t), t), t, x, **step_args).prev_sample
    assert ours.abs().mean() > 0.1
    assert (ours - x).abs().max().item() <= 1e-5


@pytest.mark.parametrize("sampler, schedule, message", [
    ("ddim", "karras", "sampler 'ddim' (diffusers DDIMScheduler) has no karras schedule"),
    ("lcm", "beta", "has no beta schedule"),
    ("dpmpp_2s_ancestral", "sgm_uniform", "no timestep_spacing option"),
    ("dpmpp_2m_karras", "exponential", "has its sigmas built in"),
    ("euler", "kerras", "unknown schedule 'kerras': choose one of default, normal, karras"),
])
def test_unsupported_combinations_are_refused_before_any_work(pipe, sampler, schedule, message):
    def started():
        raise AssertionError("sampling started")

    with pytest.raises(InputError, match=re.escape(message)):
        scheduler_settings(sampler, schedule)
    with pytest.raises(InputError, match=re.escape(message)):
        pipe(PROMPT, width=64, height=64, steps=2, sampler=sampler, schedule=schedule, cancel=started)


def test_optional_packages_missing_say_how_to_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    missing = {"torchsde", "scipy"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
    with pytest.raises(InputError, match=r"'dpmpp_sde' on schedule 'default' needs the torchsde package: pip install "
                                         r"torchsde \(or pip install 'hunyuan-dit-comfy\[samplers\]'\)"):
        scheduler_settings("dpmpp_sde")
    with pytest.raises(InputError, match=r"needs the scipy package"):
        scheduler_settings("euler", "beta")
    scheduler_settings("dpmpp_2m_sde", "karras")  # the other SDE samplers draw from torch generators


def test_lcm_is_limited_to_its_original_steps(pipe):
    with pytest.raises(InputError, match="steps for sampler 'lcm' must be between 1 and 50, found 51"):
        pipe(PROMPT, width=64, height=64, steps=51, sampler="lcm")


def test_batch_images_equal_single_runs_with_an_sde_sampler(pipe, texts):
    batch = run(pipe, texts, sampler="dpmpp_sde", batch_size=2)
    single = run(pipe, texts, sampler="dpmpp_sde", seed=6)
    assert torch.allclose(batch[1:], single, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
