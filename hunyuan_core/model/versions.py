"""The per-release defaults, in one table (the release itself is ``DiTConfig.version``).

v1.0 and v1.1 condition on image size and a style id (``style_embedder`` exists, ``extra_embedder`` takes
3968 inputs); v1.2 dropped both. The two families cannot be told apart further from the weights
(v1.0 vs v1.1, EMA vs distilled), and need not be: they run identically.

beta_end for v1.2: the official inference default is 0.02, but v1.2 was trained with 0.018 (official
training scripts, kohya) and ComfyUI's native HunyuanDiT uses 0.018. A v-prediction model must be sampled
on the noise schedule it was trained on, and matching ComfyUI makes our latents interchangeable with its
KSampler, so we default to 0.018; ``beta_end=0.02`` reproduces the official sampler exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VersionDefaults:
    """Sampling settings that differ between releases."""

    name: str
    beta_start: float
    beta_end: float
    size_cond: bool  # needs image_meta_size and style
    size_cond_source: tuple[int, int] = (1024, 1024)  # the official ``--size-cond 1024 1024``


VERSION_DEFAULTS: dict[str, VersionDefaults] = {
    "1.1": VersionDefaults(name="v1.0/v1.1", beta_start=0.00085, beta_end=0.03, size_cond=True),
    "1.2": VersionDefaults(name="v1.2", beta_start=0.00085, beta_end=0.018, size_cond=False),
}

