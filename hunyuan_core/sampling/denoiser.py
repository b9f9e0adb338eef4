"""The DiT as a denoiser (k-diffusion's wrapper): latents at a timestep in, the guided prediction out.

Everything that is fixed for one run is set up once here: the text context (negatives first when guiding,
projected and pooled by the DiT a single time), the size/style conditioning of the v1.0/v1.1 family, and the
classifier-free guidance with its optional rescale, and the ControlNets (:mod:`..controlnet.stack`). A sampler
loop only sees ``denoiser(x, t, fraction)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..controlnet.control import PreparedControl
from ..controlnet.stack import ControlStack
from ..model.dit import HunyuanDiT
from ..model.text_encoder import TextEmbeddings
from ..model.versions import VERSION_DEFAULTS
from .image_prompt import ImagePrompt


def rescale_noise_cfg(guided: torch.Tensor, cond: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Blend the guided prediction with a copy rescaled to the conditional prediction's std
    (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4)."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided


def size_conditioning(dit: HunyuanDiT, width: int, height: int, rows: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``image_meta_size`` and ``style`` for ``rows`` forward rows: the official ``--size-cond`` source size,
    the target size and a zero crop, with style 0; ``(None, None)`` for releases without size conditioning."""
    if not dit.config.size_cond:
        return None, None
    src_w, src_h = VERSION_DEFAULTS[dit.config.version].size_cond_source
    meta = torch.tensor([[src_w, src_h, width, height, 0, 0]] * rows, dtype=torch.float32, device=dit.device)
    return meta, torch.zeros(rows, dtype=torch.long, device=dit.device)


class Denoiser:
    """``denoiser(x, t)``: the DiT's prediction for latents ``x`` ``[n, C, h, w]`` at timestep ``t``.

    ``positive`` holds one encoding per image; ``negative`` (one per image, or None) turns on
    classifier-free guidance: both halves run in one batched forward, ``uncond + scale * (cond - uncond)``,
    then ``guidance_rescale`` blends in the std-rescaled copy. ``controls`` add ControlNet residuals to the
    DiT's skips, on both halves. An ``image_prompt`` adds the IP-Adapter's image branch while it is active (its
    image keys/values are computed once, by the DiT's cache).
    """

    def __init__(self, dit: HunyuanDiT, positive: TextEmbeddings, negative: TextEmbeddings | None, *,
                 width: int, height: int, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
                 controls: Sequence[PreparedControl] = (), image_prompt: ImagePrompt | None = None):
        self.dit = dit
        self.guided = negative is not None
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale
        texts = TextEmbeddings.cat([negative, positive]) if self.guided else positive
        texts = texts.to(device=dit.device, dtype=dit.dtype)
        self.rows = len(texts)
        meta, style = size_conditioning(dit, width, height, self.rows)
        with torch.no_grad():
            self.context = dit.text_context(texts.clip, texts.clip_mask, texts.t5, texts.t5_mask, meta, style)
        self.controls = ControlStack(controls, dit, texts, meta, style, images=len(positive), guided=self.guided,
                                     latent_size=(height // 8, width // 8))
        self.image_prompt = image_prompt
        if image_prompt is not None:
            self.image_embeds = image_prompt.rows(len(positive), self.guided).to(dit.device, dit.dtype)
            with torch.no_grad():
                dit.image_context(self.image_embeds)  # checks the adapter is attached; computed once, then cached

    def __call__(self, x: torch.Tensor, t: torch.Tensor, fraction: float = 0.0) -> torch.Tensor:
        """The (guided) prediction in float32 with ``x``'s channels (a learned-variance half is dropped) at a
        step starting ``fraction`` into the run (which ControlNets are active, whether the image prompt is)."""
        model_in = torch.cat([x, x]) if self.guided else x
        t_in = t.expand(self.rows).to(device=self.dit.device, dtype=torch.float32)
        controls = self.controls(model_in, t_in, fraction) if self.controls else None
        image = {}
        if self.image_prompt is not None and self.image_prompt.active_at(fraction):
            image = dict(image_embeds=self.image_embeds, i_scale=self.image_prompt.scale)
        with torch.no_grad():
            out = self.dit(model_in, t_in, context=self.context, controls=controls, **image)[:, : x.shape[1]].float()
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        guided = uncond + self.guidance_scale * (cond - uncond)
        return rescale_noise_cfg(guided, cond, self.guidance_rescale) if self.guidance_rescale > 0 else guided
