"""Sampling, split as k-diffusion splits it: ``schedulers`` (the noise schedule and one scheduler per image),
``denoiser`` (DiT call + classifier-free guidance + size/style conditioning + the cached text context),
``latents`` (noise, img2img start, inpainting), ``loop`` (the short sampler loop) and ``sample`` (the entry
point that checks a request and assembles the rest)."""
