"""``sample``: check one request, then assemble noise, schedulers, denoiser and inpainting for the loop.

Latents here are *scaled* (DiT space). Each image has its own scheduler and its own CPU generator, so
image i of a batch equals a single run with seed + i, on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..controlnet.control import PreparedControl
from ..controlnet.stack import active_controls
from ..errors import InputError
from ..model.dit import HunyuanDiT
from ..model.text_encoder import TextEmbeddings
from ..model.versions import VERSION_DEFAULTS
from ..settings.validate import check_beta_end, check_finite, check_memory, check_sampling, check_seeds
from .denoiser import Denoiser
from .image_prompt import ImagePrompt
from .latents import Inpainting, check_latents, first_step, initial_noise
from .loop import Progress, StepEnd, denoise
from .schedulers import Schedulers


def _per_image(texts: TextEmbeddings, n: int) -> TextEmbeddings:
    """Encodings for ``n`` images from one, or one per prompt (each repeated for its images in a row)."""
    return texts if len(texts) == n else texts.repeat(n // len(texts))


def sample(
    dit: HunyuanDiT,
    positive: TextEmbeddings,
    negative: TextEmbeddings | None,
    *,
    width: int,
    height: int,
    steps: int = 50,
    guidance_scale: float = 6.0,
    guidance_rescale: float = 0.0,
    sampler: str = "ddpm",
    schedule: str = "default",
    seed: int | Sequence[int] = 42,
    batch_size: int = 1,
    latents: torch.Tensor | None = None,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    mask: torch.Tensor | None = None,
    beta_end: float | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
    controls: Sequence[PreparedControl] = (),
    image_prompt: ImagePrompt | None = None,
    step_end: StepEnd | None = None,
) -> torch.Tensor:
    """Run the sampler and return scaled latents ``[len(positive) * batch_size, 4, height/8, width/8]`` (fp32).

    ``latents`` replaces the initial noise (for txt2img, the noise before ``init_noise_sigma`` scaling);
    ``init_latents`` + ``strength`` < 1 is img2img; ``mask`` (1 = regenerate) keeps the rest of
    ``init_latents``. ``cancel()`` is called before every step and stops the run by raising;
    ``step_end(index, t, x)`` after it may replace the latents. ``schedule`` places the steps
    (``schedulers.SCHEDULES``); ``seed`` is image 0's (image i uses ``seed + i``) or one per image. ``controls``
    (:func:`hunyuan_core.prepare_controls`) guide the run with ControlNets; their outputs are summed.
    ``image_prompt`` adds an IP-Adapter image prompt (the adapter attached to ``dit``).
    """
    check_sampling(width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                   guidance_rescale=guidance_rescale, sampler=sampler, schedule=schedule, seed=seed,
                   batch_size=batch_size, prompts=len(positive), strength=strength, beta_end=beta_end)
    if mask is not None and init_latents is None:
        raise InputError("inpainting needs the image to keep: pass init_latents (or image) together with mask")
    n, h, w = len(positive) * batch_size, height // 8, width // 8
    if negative is not None and len(negative) not in (1, len(positive), n):
        raise InputError(
            f"{len(negative)} negative prompt encodings for {len(positive)} prompts: give one, or one per prompt"
        )
    guided = guidance_scale > 1.0
    if guided and negative is None:
        raise InputError("guidance_scale > 1 needs a negative prompt encoding")
    device = dit.device
    check_memory(dit.config, dit.dtype, device, width, height, 2 * n if guided else n,
                 len({id(c.controlnet) for c in active_controls(controls)}))
    source = None
    if init_latents is not None:  # one image to start all from, or one per image
        source = init_latents.to(device)
        source = check_latents("init latents", source.expand(n, -1, -1, -1) if len(source) == 1 else source, n, h, w)
    check_finite("mask", mask)
    generators = [torch.Generator("cpu").manual_seed(s) for s in check_seeds(seed, n)]
    noise = check_latents("latents", latents.cpu(), n, h, w) if latents is not None else initial_noise(generators, h, w)
    noise = noise.to(device)

    version = VERSION_DEFAULTS[dit.config.version]
    schedulers = Schedulers(sampler, version.beta_start, check_beta_end(beta_end, version.beta_start) or version.beta_end,
                            steps, generators, device, begin=first_step(steps, strength) if source is not None else None,
                            schedule=schedule)
    if source is not None and strength < 1.0:
        x = schedulers.add_noise(source, noise, schedulers.timesteps[0])
    else:
        x = noise * schedulers.init_noise_sigma
    denoiser = Denoiser(dit, _per_image(positive, n), _per_image(negative, n) if guided else None,
                        width=width, height=height, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                        controls=controls, image_prompt=image_prompt)
    inpainting = Inpainting(mask, source, noise, schedulers) if mask is not None else None
    return denoise(denoiser, schedulers, x, inpainting=inpainting, progress=progress, cancel=cancel,
                   step_end=step_end)
