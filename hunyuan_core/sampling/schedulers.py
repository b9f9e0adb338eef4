"""Samplers: diffusers schedulers configured with Hunyuan-DiT's noise schedule (scaled_linear, v-prediction).

``ddpm``, ``ddim`` and ``dpmms`` are the three of the official ``SAMPLER_FACTORY`` with its settings;
the others are the usual community choices on the same schedule.
"""

from __future__ import annotations

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

