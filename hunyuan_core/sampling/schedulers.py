"""Samplers and sigma schedules: diffusers schedulers configured with Hunyuan-DiT's noise schedule
(scaled_linear, v-prediction).

``ddpm``, ``ddim`` and ``dpmms`` are the three of the official ``SAMPLER_FACTORY`` with its settings; the
others carry ComfyUI's KSampler names, each mapped to the diffusers class (and settings) that implements it.
A *schedule* (KSampler's "scheduler"; named so here to keep it apart from a diffusers scheduler object) picks
where the steps fall: it only sets the diffusers config flags of :data:`SCHEDULES`, so a sampler whose class
lacks the flag refuses it. :class:`Schedulers` steps one scheduler per image, so that image i of a batch
equals a single run with its own seed.
"""

from __future__ import annotations

import importlib.util
import inspect

import torch

from ..errors import InputError
from ..settings.limits import LCM_ORIGINAL_STEPS, TRAIN_TIMESTEPS

_SCHEDULE = dict(beta_schedule="scaled_linear", prediction_type="v_prediction", num_train_timesteps=TRAIN_TIMESTEPS)
_LEADING = dict(steps_offset=1, timestep_spacing="leading")  # the official DDPM/DDIM spacing
_SDE = dict(algorithm_type="sde-dpmsolver++")

# name -> (diffusers scheduler class name, settings); diffusers is imported on first use, not at import time.
SAMPLER_FACTORY: dict[str, tuple[str, dict]] = {
    "ddpm": ("DDPMScheduler", dict(_LEADING, clip_sample=False, clip_sample_range=1.0, variance_type="fixed_small")),
    "ddim": ("DDIMScheduler", dict(_LEADING, clip_sample=False, clip_sample_range=1.0)),
    "dpmms": ("DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver++")),
    "euler": ("EulerDiscreteScheduler", dict(_LEADING)),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", dict(_LEADING)),
    "unipc": ("UniPCMultistepScheduler", dict()),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver++", use_karras_sigmas=True)
    ),
    "heun": ("HeunDiscreteScheduler", dict()),
    "dpm_2": ("KDPM2DiscreteScheduler", dict()),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", dict()),
    "lms": ("LMSDiscreteScheduler", dict()),
    # diffusers' single-step DPM-Solver++ (2S) with its SDE noise is its ancestral form
    "dpmpp_2s_ancestral": ("DPMSolverSinglestepScheduler", dict(_SDE, solver_order=2)),
    "dpmpp_sde": ("DPMSolverSDEScheduler", dict()),  # needs torchsde (Brownian-tree noise)
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", dict(_SDE, solver_order=2)),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", dict(_SDE, solver_order=3)),
    "deis": ("DEISMultistepScheduler", dict()),
    "lcm": ("LCMScheduler", dict(original_inference_steps=LCM_ORIGINAL_STEPS)),  # for LCM-distilled weights
}
SAMPLERS: list[str] = list(SAMPLER_FACTORY)

_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
# schedule -> the diffusers config flags it sets. "default" keeps each sampler's own spacing: the official one
# for ddpm/ddim/dpmms, the diffusers class's default (linspace, KSampler's "normal") for the k-diffusion names.
# "simple" and "sgm_uniform" are both diffusers' "trailing" spacing.
SCHEDULES: dict[str, dict] = {
    "default": dict(),
    "normal": dict(timestep_spacing="linspace"),
    "karras": dict(use_karras_sigmas=True),
    "exponential": dict(use_exponential_sigmas=True),
    "beta": dict(use_beta_sigmas=True),
    "simple": dict(timestep_spacing="trailing"),
    "sgm_uniform": dict(timestep_spacing="trailing"),
}


def check_sampler(name: object) -> str:
    """``name`` if it is one of :data:`SAMPLERS`, else an :class:`InputError` listing them."""
    if not isinstance(name, str) or name not in SAMPLER_FACTORY:
        raise InputError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return name


def scheduler_settings(sampler: str, schedule: str = "default") -> tuple[str, dict]:
    """The diffusers class name and its settings for ``sampler`` on ``schedule``; a combination the class cannot
    run (no such flag, a sigma schedule built into the sampler, torchsde missing) is an :class:`InputError`."""
    import diffusers

    check_sampler(sampler)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    cls_name, settings = SAMPLER_FACTORY[sampler]
    flags = SCHEDULES[schedule]
    accepted = inspect.signature(getattr(diffusers, cls_name).__init__).parameters
    missing = [k for k in flags if k not in accepted]
    if missing:
        raise InputError(f"sampler '{sampler}' (diffusers {cls_name}) has no {schedule} schedule (no {missing[0]} "
                         f"option); use schedule 'default' or another sampler")
    built_in = [k for k in _SIGMA_FLAGS if settings.get(k)]
    if built_in and flags and built_in[0] not in flags:
        raise InputError(f"sampler '{sampler}' has its sigmas built in ({built_in[0]}); use schedule 'default', or "
                         f"sampler 'dpmms' with schedule '{schedule}'")
    for needed, package in ((cls_name == "DPMSolverSDEScheduler", "torchsde"), ("use_beta_sigmas" in flags, "scipy")):
        if needed and importlib.util.find_spec(package) is None:
            raise InputError(f"sampler '{sampler}' on schedule '{schedule}' needs the {package} package: pip install "
                             f"{package} (or pip install 'hunyuan-dit-comfy[samplers]')")
    return cls_name, {**settings, **flags}


def make_scheduler(name: str, beta_start: float, beta_end: float, schedule: str = "default", seed: int | None = None):
    """A fresh scheduler instance for ``name`` on the Hunyuan-DiT schedule ending at ``beta_end``, with the steps
    placed by ``schedule``. ``seed`` seeds samplers that draw their own noise (dpmpp_sde's Brownian tree)."""
    import diffusers

    cls_name, kwargs = scheduler_settings(name, schedule)
    cls = getattr(diffusers, cls_name)
    if "noise_sampler_seed" in inspect.signature(cls.__init__).parameters:
        kwargs = {**kwargs, "noise_sampler_seed": seed}
    return cls(beta_start=beta_start, beta_end=beta_end, **_SCHEDULE, **kwargs)


class Schedulers:
    """One scheduler per image, stepped together on ``[n, C, h, w]`` latents.

    diffusers' schedulers take one generator per call, and multistep ones keep state per run; one instance
    and one CPU generator per image make every image of a batch reproduce its single run on any device.
    ``begin`` skips the first ``begin`` inference steps (img2img: ``strength`` < 1 starts part-way).
    """

    def __init__(self, name: str, beta_start: float, beta_end: float, steps: int,
                 generators: list[torch.Generator], device: torch.device, begin: int | None = None,
                 schedule: str = "default"):
        self.items = [make_scheduler(name, beta_start, beta_end, schedule, seed=g.initial_seed()) for g in generators]
        for s in self.items:
            s.set_timesteps(steps, device=device)
        first = self.items[0]
        self.generators = generators if "generator" in inspect.signature(first.step).parameters else None
        self.init_noise_sigma = first.init_noise_sigma
        start = (begin or 0) * first.order
        self.timesteps = first.timesteps[start:]
        # Counting steps from a set begin index, not by looking ``t`` up: sigma schedules rounded to integer
        # timesteps repeat some (beta, exponential), and a lookup would then start at the wrong step.
        for s in self.items:
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(start)

    def scale_model_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Each image's latents scaled for the model input at ``t`` (sigma-based samplers divide)."""
        return torch.cat([s.scale_model_input(x[i : i + 1], t) for i, s in enumerate(self.items)])

    def step(self, pred: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The latents one step further, each image drawing any step noise from its own generator."""
        return torch.cat([
            s.step(pred[i : i + 1], t, x[i : i + 1],
                   **({"generator": self.generators[i]} if self.generators else {})).prev_sample
            for i, s in enumerate(self.items)
        ])

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``clean`` latents noised to the level of timestep ``t`` (img2img start, inpainting's kept region)."""
        return self.items[0].add_noise(clean, noise, t.reshape(1).repeat(clean.shape[0]))
