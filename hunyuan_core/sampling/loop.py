"""The denoising loop: classifier-free guidance in one batched forward, per-image seeds, img2img, inpainting.

Latents here are *scaled* (DiT space: VAE latents x 0.13025). Each image has its own scheduler and its
own CPU generator, so image i of a batch equals a single run with its seed, on any device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError, NumericsError
from ..model.dit import HunyuanDiT
from ..model.text_encoder import TextEmbeddings
from ..model.versions import VERSION_DEFAULTS
from ..settings.validate import check_beta_end, check_finite, check_memory, check_sampling
from .schedulers import make_scheduler

Progress = Callable[[int, int, torch.Tensor], None]
LATENT_CHANNELS = 4


def rescale_noise_cfg(guided: torch.Tensor, cond: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Blend the guided prediction with a copy rescaled to the conditional prediction's std
    (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4)."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided


def prepare_mask(mask: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Any [H,W] / [B,H,W] / [B,1,H,W] mask (1 = regenerate) -> [n,1,h,w] float at latent resolution."""
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise InputError(f"mask must be [H,W], [B,H,W] or [B,1,H,W]; got shape {tuple(mask.shape)}")
    if mask.shape[0] not in (1, n):
        raise InputError(f"mask batch {mask.shape[0]} does not match {n} images")
    mask = F.interpolate(mask.float(), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return mask.expand(n, -1, -1, -1)


def non_finite_report(step: int, total: int, dtype: torch.dtype, device: torch.device) -> str:
    """Why sampling produced NaN/Inf, from what it ran in: inputs were checked finite before the first step,
    so it is fp16 overflow (the black-image failure on GPUs) or non-finite weights."""
    found = f"sampling produced NaN/Inf latents at step {step} of {total} (the image would be black)"
    if dtype == torch.float16:
        return (f"{found}: the DiT runs in fp16 on {device}, whose range some layers overflow; "
                "load the model with dtype bf16 (or fp32)")
    return (f"{found}, with {str(dtype).replace('torch.', '')} weights on {device}, which do not overflow: the "
            "model's weights likely hold NaN/Inf (re-download or re-convert the file)")


def _step_accepts_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


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
    seed: int = 42,
    batch_size: int = 1,
    latents: torch.Tensor | None = None,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    mask: torch.Tensor | None = None,
    beta_end: float | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run the sampler and return scaled latents ``[len(positive) * batch_size, 4, height/8, width/8]`` (fp32).

    ``latents`` replaces the initial noise (for txt2img, the noise before ``init_noise_sigma`` scaling);
    ``init_latents`` + ``strength`` < 1 is img2img; ``mask`` (1 = regenerate) keeps the rest of
    ``init_latents``. ``cancel()`` is called before every step and stops the run by raising.
    """
    check_sampling(width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                   guidance_rescale=guidance_rescale, sampler=sampler, seed=seed, batch_size=batch_size,
                   prompts=len(positive), strength=strength, beta_end=beta_end)
    if mask is not None and init_latents is None:
        raise InputError("inpainting needs the image to keep: pass init_latents (or image) together with mask")
    version = VERSION_DEFAULTS[dit.config.version]
    beta_end = check_beta_end(beta_end, version.beta_start) or version.beta_end
    device, dtype = dit.device, dit.dtype
    h, w = height // 8, width // 8
    n = len(positive) * batch_size
    if negative is not None and len(negative) not in (1, len(positive), n):
        raise InputError(
            f"{len(negative)} negative prompt encodings for {len(positive)} prompts: give one, or one per prompt"
        )
    do_cfg = guidance_scale > 1.0
    check_memory(dit.config, dtype, device, width, height, 2 * n if do_cfg else n)
    seeds = [int(seed) + i for i in range(n)]
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]

    if latents is not None:
        if tuple(latents.shape) != (n, LATENT_CHANNELS, h, w):
            raise InputError(f"latents must have shape {(n, LATENT_CHANNELS, h, w)}, got {tuple(latents.shape)}")
        check_finite("latents", latents)
        noise = latents.float().cpu()
    else:
        noise = torch.cat([torch.randn(1, LATENT_CHANNELS, h, w, generator=g) for g in gens])
    noise = noise.to(device)

    schedulers = [make_scheduler(sampler, version.beta_start, beta_end) for _ in range(n)]
    for s in schedulers:
        s.set_timesteps(steps, device=device)
    timesteps = schedulers[0].timesteps
    order = schedulers[0].order

    init = None
    if init_latents is not None:
        init = init_latents.float().to(device)
        if init.shape[0] == 1 and n > 1:
            init = init.expand(n, -1, -1, -1)
        if tuple(init.shape) != (n, LATENT_CHANNELS, h, w):
            raise InputError(
                f"init latents have shape {tuple(init.shape)}; expected {(n, LATENT_CHANNELS, h, w)} "
                f"for a {width}x{height} image"
            )
        check_finite("init latents", init)
        t_start = steps - max(1, min(steps, int(round(steps * strength))))
        timesteps = timesteps[t_start * order :]
        for s in schedulers:
            if hasattr(s, "set_begin_index"):
                s.set_begin_index(t_start * order)
    check_finite("mask", mask)
    mask_l = prepare_mask(mask.to(device), n, h, w) if mask is not None else None

    if init is not None and strength < 1.0:
        x = schedulers[0].add_noise(init, noise, timesteps[:1].repeat(n))
    else:
        x = noise * schedulers[0].init_noise_sigma

    cond = positive.repeat(batch_size) if batch_size > 1 else positive
    if do_cfg:
        if negative is None:
            raise InputError("guidance_scale > 1 needs a negative prompt encoding")
        neg = negative.repeat(n // len(negative)) if len(negative) != n else negative
        cond = TextEmbeddings.cat([neg, cond])
    cond = cond.to(device=device, dtype=dtype)
    rows = 2 * n if do_cfg else n
    meta = style = None
    if dit.config.size_cond:
        src_w, src_h = version.size_cond_source
        meta = torch.tensor([[src_w, src_h, width, height, 0, 0]] * rows, dtype=torch.float32, device=device)
        style = torch.zeros(rows, dtype=torch.long, device=device)
    with_gen = _step_accepts_generator(schedulers[0])
    with torch.no_grad():
        context = dit.text_context(cond.clip, cond.clip_mask, cond.t5, cond.t5_mask, meta, style)

    total = len(timesteps)
    for i, t in enumerate(timesteps):
        if cancel is not None:
            cancel()
        model_in = torch.cat([s.scale_model_input(x[j : j + 1], t) for j, s in enumerate(schedulers)])
        if do_cfg:
            model_in = torch.cat([model_in, model_in])
        t_in = t.expand(rows).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            out = dit(model_in, t_in, context=context)[:, :LATENT_CHANNELS].float()
        if do_cfg:
            uncond_pred, cond_pred = out.chunk(2)
            pred = uncond_pred + guidance_scale * (cond_pred - uncond_pred)
            if guidance_rescale > 0:
                pred = rescale_noise_cfg(pred, cond_pred, guidance_rescale)
        else:
            pred = out
        x = torch.cat([
            s.step(pred[j : j + 1], t, x[j : j + 1], **({"generator": gens[j]} if with_gen else {})).prev_sample
            for j, s in enumerate(schedulers)
        ])
        if mask_l is not None:
            keep = init
            if i + 1 < total:
                keep = schedulers[0].add_noise(init, noise, timesteps[i + 1 : i + 2].repeat(n))
            x = mask_l * x + (1.0 - mask_l) * keep
        if not torch.isfinite(x).all():  # stop now: every further step would be wasted on a black image
            raise NumericsError(non_finite_report(i + 1, total, dtype, device))
        if progress is not None:
            progress(i + 1, total, x)
    return x
