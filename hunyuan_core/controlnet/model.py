"""HunYuanControlNet: a trained copy of the DiT's front end and first-half blocks whose per-block outputs,
projected by zero-initialised linears, are added to the DiT's long skips (reference/wave2/controlnet.md §2).

Official parameter names: ``blocks.{i}`` as the DiT's, ``before_proj`` (the hint's patch tokens into the
stream) and ``after_proj_list.{i}`` (block i's output -> control i).
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import nn

from ..errors import InputError
from ..model.config import DiTConfig
from ..model.dit import DiTFrontEnd, HunyuanDiT, HunyuanDiTBlock, TextContext
from ..model.versions import VERSION_DEFAULTS


class ControlNet(DiTFrontEnd):
    """The official ``HunYuanControlNet``. ``config`` describes the DiT it was made for (its blocks are that
    DiT's first ``depth / 2 - 1``); ``version`` is that DiT's release family."""

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        count = config.skip_count
        self.blocks = nn.ModuleList(HunyuanDiTBlock(config, skip=False) for _ in range(count))
        self.before_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.after_proj_list = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(count))

    @property
    def version(self) -> str:
        """The release family of the DiT it controls: ``"1.1"`` (v1.0/v1.1) or ``"1.2"``."""
        return self.config.version

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        text_embedding_mask: torch.Tensor | None = None,
        encoder_hidden_states_t5: torch.Tensor | None = None,
        text_embedding_mask_t5: torch.Tensor | None = None,
        image_meta_size: torch.Tensor | None = None,
        style: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        context: TextContext | None = None,
    ) -> list[torch.Tensor]:
        """One residual [B, S, hidden] per copied block for latents ``x`` [B, C, H, W] at timesteps ``t`` [B],
        guided by ``condition`` (the scaled VAE latents of the hint, ``x``'s shape). Pass the result to the DiT
        as ``controls=``. Text inputs, ``image_rotary_emb`` and ``context`` (from :meth:`text_context`, the fast
        path for sampling) work as in :meth:`HunyuanDiT.forward`."""
        if condition.shape != x.shape:
            raise InputError(f"the ControlNet condition must have the latents' shape {tuple(x.shape)}; "
                             f"got {tuple(condition.shape)}")
        text = (encoder_hidden_states, text_embedding_mask, encoder_hidden_states_t5, text_embedding_mask_t5,
                image_meta_size, style)
        rope, context, c = self.conditioning(x, t, text, image_rotary_emb, context)
        h = self.x_embedder(x.to(self.dtype)) + self.before_proj(self.x_embedder(condition.to(self.dtype)))
        controls = []
        for block, kv, proj in zip(self.blocks, context.kv, self.after_proj_list):
            h = block(h, c, kv, rope)
            controls.append(proj(h))
        return controls


def _describe(config: DiTConfig) -> str:
    return f"Hunyuan-DiT {VERSION_DEFAULTS[config.version].name} (width {config.hidden_size}, {config.depth} blocks)"


def check_controlnet(controlnet: ControlNet, dit: HunyuanDiT) -> None:
    """Refuse (InputError) a ControlNet made for another DiT release or architecture than ``dit``, naming both."""
    made_for = replace(controlnet.config, out_channels=dit.config.out_channels)  # a ControlNet cannot tell it
    if made_for == dit.config:
        return
    differ = [f"{f.name} {getattr(made_for, f.name)} vs {getattr(dit.config, f.name)}"
              for f in fields(DiTConfig) if getattr(made_for, f.name) != getattr(dit.config, f.name)]
    raise InputError(f"this ControlNet was made for a {_describe(made_for)}, but the DiT is a {_describe(dit.config)} "
                     f"({', '.join(differ)}): use a ControlNet trained for the DiT's release")
