"""The ControlNets of one sampling run, as the denoiser calls them each step: every text context computed
once (per ControlNet, like the DiT's), every hint batched for the classifier-free guidance halves, and per
step one forward of each active ControlNet on the whole batch, its residuals weighted and summed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..model.dit import HunyuanDiT, TextContext
from ..model.text_encoder import TextEmbeddings
from .control import PreparedControl
from .model import check_controlnet


def active_controls(controls: Sequence[PreparedControl]) -> list[PreparedControl]:
    """The controls that act on some step (strength not zero), after checking each was prepared for a run."""
    for item in controls:
        if not isinstance(item, PreparedControl):
            raise InputError(f"controls takes prepared controls (hy.prepare_controls); found {type(item).__name__}")
    return [c for c in controls if c.active]


class ControlStack:
    """``stack(x, t, fraction)``: the summed controls for the DiT's ``controls=``, or None when no ControlNet
    is active at a step starting ``fraction`` into the run. ``texts``, ``image_meta_size`` and ``style`` are
    the rows the DiT runs on (negatives first when ``guided``); hints have 1 or ``images`` rows."""

    def __init__(self, controls: Sequence[PreparedControl], dit: HunyuanDiT, texts: TextEmbeddings,
                 image_meta_size: torch.Tensor | None, style: torch.Tensor | None, *, images: int, guided: bool,
                 latent_size: tuple[int, int]):
        self.items = active_controls(controls)
        self.contexts: dict[int, TextContext] = {}
        self.conditions: list[torch.Tensor] = []
        for item in self.items:
            net = item.controlnet
            check_controlnet(net, dit)
            rows, _, *size = item.condition.shape
            if tuple(size) != latent_size or rows not in (1, images):
                raise InputError(f"a ControlNet hint must be encoded for this run: latents [1 or {images}, 4, "
                                 f"{latent_size[0]}, {latent_size[1]}]; got {list(item.condition.shape)}")
            condition = item.condition.to(device=net.device, dtype=net.dtype).expand(images, -1, -1, -1)
            self.conditions.append(torch.cat([condition, condition]) if guided else condition)
            if id(net) not in self.contexts:
                t = texts.to(device=net.device)
                meta = None if image_meta_size is None else image_meta_size.to(net.device)
                with torch.no_grad():
                    self.contexts[id(net)] = net.text_context(t.clip, t.clip_mask, t.t5, t.t5_mask, meta,
                                                              None if style is None else style.to(net.device))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, fraction: float) -> list[torch.Tensor] | None:
        total = None
        for item, condition in zip(self.items, self.conditions):
            if not item.active_at(fraction):
                continue
            net = item.controlnet
            with torch.no_grad():
                residuals = net(x.to(net.device), t.to(net.device), condition, context=self.contexts[id(net)])
            weighted = [r * s for r, s in zip(residuals, item.scales.tolist())]
            total = weighted if total is None else [a + b.to(a) for a, b in zip(total, weighted)]
        return total
