"""HunYuanDiT: the diffusion transformer, with the official parameter names (``state_dict()`` keys equal
the keys of ``pytorch_model_ema.pt``). Reference: reference/hunyuandit-official.md §1.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention, Rope, SelfAttention
from .config import DiTConfig
from .embedders import (
    AttentionPool,
    FP32SiLU,
    TimestepEmbedder,
    mlp_embedder,
    timestep_embedding,
)
from .rope import rope_2d, rope_freqs


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back (fp16 statistics overflow on large activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class Mlp(nn.Module):
    """Feed-forward ``fc1 -> GELU(tanh) -> fc2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HunyuanDiTBlock(nn.Module):
    """One block: [long skip] -> self-attn (shift-only modulation) -> cross-attn -> FFN.

    Official naming: ``norm2`` precedes the FFN and ``norm3`` the cross-attention.
    """

    def __init__(self, cfg: DiTConfig, skip: bool):
        super().__init__()
        dim = cfg.hidden_size
        self.norm1 = FP32LayerNorm(dim, eps=1e-6)
        self.attn1 = SelfAttention(dim, cfg.num_heads)
        self.norm2 = FP32LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, cfg.mlp_hidden)
        self.default_modulation = nn.Sequential(FP32SiLU(), nn.Linear(dim, dim))
        self.attn2 = CrossAttention(dim, cfg.text_dim, cfg.num_heads)
        self.norm3 = FP32LayerNorm(dim, eps=1e-6)
        if skip:
            self.skip_norm = FP32LayerNorm(2 * dim, eps=1e-6)
            self.skip_linear = nn.Linear(2 * dim, dim)
        else:
            self.skip_norm = self.skip_linear = None

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        rope: Rope,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(self.skip_norm(torch.cat([x, skip], dim=-1)))
        x = x + self.attn1(self.norm1(x) + self.default_modulation(c).unsqueeze(1), rope)
        x = x + self.attn2(self.norm3(x), text_kv, rope)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """adaLN (shift first, then scale) and the linear projection to patch pixels."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(self.norm_final(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))


class PatchEmbed(nn.Module):
    """Latent [B, C, H, W] -> patch tokens [B, H/p * W/p, hidden], row-major."""

    def __init__(self, patch: int, in_ch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass
class TextContext:
    """Everything the DiT derives from the prompts alone: the same at every sampling step, so computed once.

    ``extra`` is ``extra_embedder(pooled mT5 [+ size, style])``; ``kv`` holds each block's cross-attention
    keys and values.
    """

    extra: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


class HunyuanDiT(nn.Module):
    """The Hunyuan-DiT denoiser. ``forward`` returns all ``out_channels`` (v-prediction first, then the
    learned-variance channels the samplers discard)."""

    weights_file = None  # set by the loaders: the file the weights came from (formats.dit_source.DiTWeightsFile)

    def __init__(self, config: DiTConfig):
        super().__init__()
        cfg = self.config = config
        self.text_embedding_padding = nn.Parameter(torch.empty(cfg.text_len + cfg.t5_len, cfg.text_dim))
        self.mlp_t5 = mlp_embedder(cfg.t5_dim, cfg.t5_dim * 4, cfg.text_dim)
        self.pooler = AttentionPool(cfg.t5_len, cfg.t5_dim, cfg.pooler_heads, cfg.pooled_dim)
        if cfg.style_cond:
            self.style_embedder = nn.Embedding(1, cfg.hidden_size)
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, cfg.hidden_size)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.extra_embedder = mlp_embedder(cfg.extra_in_dim, cfg.hidden_size * 4, cfg.hidden_size)
        self.blocks = nn.ModuleList(HunyuanDiTBlock(cfg, skip=i > cfg.depth // 2) for i in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.hidden_size, cfg.patch_size**2 * cfg.out_channels)
        self._rope_cache: dict[tuple, Rope] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.x_embedder.proj.weight.device

    def rope(self, grid_h: int, grid_w: int, device: torch.device) -> Rope:
        """RoPE rotations for a token grid, cached per size and device."""
        key = (grid_h, grid_w, str(device))
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_freqs(*rope_2d(self.config.head_dim, grid_h, grid_w)).to(device)
        return self._rope_cache[key]

    def text_states(
        self,
        encoder_hidden_states: torch.Tensor,
        text_embedding_mask: torch.Tensor,
        encoder_hidden_states_t5: torch.Tensor,
        text_embedding_mask_t5: torch.Tensor,
    ) -> torch.Tensor:
        """The 77 + 256 cross-attention tokens; padded positions become the learned ``text_embedding_padding``."""
        t5 = self.mlp_t5(encoder_hidden_states_t5)
        text = torch.cat([encoder_hidden_states, t5], dim=1)
        mask = torch.cat([text_embedding_mask, text_embedding_mask_t5], dim=-1).bool()
        return torch.where(mask.unsqueeze(2), text, self.text_embedding_padding.to(text))

    def text_context(
        self,
        encoder_hidden_states: torch.Tensor,
        text_embedding_mask: torch.Tensor,
        encoder_hidden_states_t5: torch.Tensor,
        text_embedding_mask_t5: torch.Tensor,
        image_meta_size: torch.Tensor | None = None,
        style: torch.Tensor | None = None,
    ) -> TextContext:
        """Precompute the prompt-dependent half of the forward pass (pass it as ``context=`` on every step)."""
        dtype = self.dtype
        t5 = encoder_hidden_states_t5.to(dtype)
        text = self.text_states(encoder_hidden_states.to(dtype), text_embedding_mask, t5, text_embedding_mask_t5)
        b = t5.shape[0]
        extra = [self.pooler(t5)]
        if self.config.size_cond:
            if image_meta_size is None:
                raise ValueError("this DiT (v1.0/v1.1) needs image_meta_size [B, 6]")
            extra.append(timestep_embedding(image_meta_size.reshape(-1), 256).to(dtype).view(b, -1))
        if self.config.style_cond:
            if style is None:
                style = torch.zeros(b, dtype=torch.long, device=t5.device)
            extra.append(self.style_embedder(style).to(dtype))
        return TextContext(
            extra=self.extra_embedder(torch.cat(extra, dim=1)),
            kv=[block.attn2.context_kv(text) for block in self.blocks],
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        text_embedding_mask: torch.Tensor | None = None,
        encoder_hidden_states_t5: torch.Tensor | None = None,
        text_embedding_mask_t5: torch.Tensor | None = None,
        image_meta_size: torch.Tensor | None = None,
        style: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        context: TextContext | None = None,
    ) -> torch.Tensor:
        """Denoise latents ``x`` [B, C, H, W] at timesteps ``t`` [B]; returns [B, out_channels, H, W].

        Give either the text inputs or a ``context`` from :meth:`text_context` (the fast path for sampling).
        ``image_rotary_emb`` (cos, sin) [S, head_dim] overrides the RoPE computed from the latent size.
        """
        cfg = self.config
        b, _, h, w = x.shape
        gh, gw = h // cfg.patch_size, w // cfg.patch_size
        if image_rotary_emb is not None:
            rope = rope_freqs(*image_rotary_emb).to(x.device)
        else:
            rope = self.rope(gh, gw, x.device)
        if context is None:
            context = self.text_context(
                encoder_hidden_states, text_embedding_mask, encoder_hidden_states_t5, text_embedding_mask_t5,
                image_meta_size, style,
            )
        c = self.t_embedder(t.to(x.device)) + context.extra
        x = self.x_embedder(x.to(self.dtype))
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x, c, context.kv[i], rope, skips.pop() if i > cfg.depth // 2 else None)
            if i < cfg.depth // 2 - 1:
                skips.append(x)
        x = self.final_layer(x, c)
        p, oc = cfg.patch_size, cfg.out_channels
        x = x.view(b, gh, gw, p, p, oc).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, oc, gh * p, gw * p)
