"""Sampling: the schedulers on the Hunyuan-DiT noise schedule and the denoising loop."""
