"""Samplers: diffusers schedulers configured with Hunyuan-DiT's noise schedule (scaled_linear, v-prediction).

``ddpm``, ``ddim`` and ``dpmms`` are the three of the official ``SAMPLER_FACTORY`` with its settings;
the others are the usual community choices on the same schedule. :class:`Schedulers` steps one scheduler
per image, so that image i of a batch equals a single run with its own seed.
"""

from __future__ import annotations

import inspect

import torch

from ..errors import InputError
from ..settings.limits import TRAIN_TIMESTEPS

_SCHEDULE = dict(beta_schedule="scaled_linear", prediction_type="v_prediction", num_train_timesteps=TRAIN_TIMESTEPS)
_LEADING = dict(steps_offset=1, timestep_spacing="leading")  # the official DDPM/DDIM spacing

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
}
SAMPLERS: list[str] = list(SAMPLER_FACTORY)


def check_sampler(name: object) -> str:
    """``name`` if it is one of :data:`SAMPLERS`, else an :class:`InputError` listing them."""
    if not isinstance(name, str) or name not in SAMPLER_FACTORY:
        raise InputError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return name


def make_scheduler(name: str, beta_start: float, beta_end: float):
    """A fresh scheduler instance for ``name`` on the Hunyuan-DiT schedule ending at ``beta_end``."""
    check_sampler(name)
    import diffusers

    cls_name, kwargs = SAMPLER_FACTORY[name]
    return getattr(diffusers, cls_name)(beta_start=beta_start, beta_end=beta_end, **_SCHEDULE, **kwargs)



class Schedulers:
    """One scheduler per image, stepped together on ``[n, C, h, w]`` latents.

    diffusers' schedulers take one generator per call, and multistep ones keep state per run; one instance
    and one CPU generator per image make every image of a batch reproduce its single run on any device.
    ``begin`` skips the first ``begin`` inference steps (img2img: ``strength`` < 1 starts part-way).
    """

    def __init__(self, name: str, beta_start: float, beta_end: float, steps: int,
                 generators: list[torch.Generator], device: torch.device, begin: int | None = None):
        self.items = [make_scheduler(name, beta_start, beta_end) for _ in generators]
        for s in self.items:
            s.set_timesteps(steps, device=device)
        first = self.items[0]
        self.generators = generators if "generator" in inspect.signature(first.step).parameters else None
        self.init_noise_sigma = first.init_noise_sigma
        self.timesteps = first.timesteps
        if begin is not None:
            self.timesteps = self.timesteps[begin * first.order :]
            for s in self.items:
                if hasattr(s, "set_begin_index"):
                    s.set_begin_index(begin * first.order)

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
