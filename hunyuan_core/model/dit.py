"""HunYuanDiT: the diffusion transformer, with the official parameter names (``state_dict()`` keys equal
the keys of ``pytorch_model_ema.pt``). Reference: reference/hunyuandit-official.md §1.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
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
        image_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        t_scale: float = 1.0,
        i_scale: float = 1.0,
    ) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(self.skip_norm(torch.cat([x, skip], dim=-1)))
        x = x + self.attn1(self.norm1(x) + self.default_modulation(c).unsqueeze(1), rope)
        x = x + self.attn2(self.norm3(x), text_kv, rope, image_kv, t_scale, i_scale)
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


class DiTFrontEnd(nn.Module):
    """What the DiT and its ControlNet share (the official ``HunYuanDiT`` and ``HunYuanControlNet`` both hold
    these under the same names): the text projection and padding, the mT5 pooler, the patch, timestep and
    extra (pooled text [+ size, style]) embedders, RoPE, and the per-prompt text context of their ``blocks``."""

    blocks: nn.ModuleList  # set by the subclass: the blocks whose cross-attention keys/values the context holds

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
        """The 77 + 256 cross-attention tokens; padded positions become the learned ``text_embedding_padding``.

        A longer BERT sequence (opt-in long prompts) has no learned padding past 77: its padded positions there
        take the last BERT row of the table, the one every prompt shorter than 77 tokens was trained with."""
        t5 = self.mlp_t5(encoder_hidden_states_t5)
        text = torch.cat([encoder_hidden_states, t5], dim=1)
        mask = torch.cat([text_embedding_mask, text_embedding_mask_t5], dim=-1).bool()
        padding = self.text_embedding_padding
        extra = encoder_hidden_states.shape[1] - self.config.text_len
        if extra > 0:
            bert_pad, t5_pad = padding[: self.config.text_len], padding[self.config.text_len :]
            padding = torch.cat([bert_pad, bert_pad[-1:].expand(extra, -1), t5_pad])
        return torch.where(mask.unsqueeze(2), text, padding.to(text))

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

    def conditioning(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: tuple[torch.Tensor | None, ...],
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
        context: TextContext | None,
    ) -> tuple[Rope, TextContext, torch.Tensor]:
        """What every block of one forward pass needs: RoPE for ``x``'s token grid (or ``image_rotary_emb``
        (cos, sin)), the text context (``context``, else computed from the six ``text`` inputs of
        :meth:`text_context`) and the conditioning vector ``c = t_embedder(t) + extra``."""
        p = self.config.patch_size
        if image_rotary_emb is not None:
            rope = rope_freqs(*image_rotary_emb).to(x.device)
        else:
            rope = self.rope(x.shape[-2] // p, x.shape[-1] // p, x.device)
        if context is None:
            context = self.text_context(*text)
        return rope, context, self.t_embedder(t.to(x.device)) + context.extra


class HunyuanDiT(DiTFrontEnd):
    """The Hunyuan-DiT denoiser. ``forward`` returns all ``out_channels`` (v-prediction first, then the
    learned-variance channels the samplers discard)."""

    weights_file = None  # set by the loaders: the file the weights came from (formats.dit_source.DiTWeightsFile)

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        cfg = config
        self.blocks = nn.ModuleList(HunyuanDiTBlock(cfg, skip=i > cfg.depth // 2) for i in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.hidden_size, cfg.patch_size**2 * cfg.out_channels)
        self._image_cache: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def add_image_branch(self, clip_dim: int, tokens: int) -> None:
        """Create an IP-Adapter's modules (official names, uninitialised; build on the meta device and assign):
        the projection of a ``clip_dim`` image embedding to ``tokens`` text-width tokens, their LayerNorm, and
        the image branch of every block's cross-attention. Forgets image keys/values cached for other weights."""
        self.ip_adapter_clip_len_trans_block = nn.Linear(clip_dim, tokens * self.config.text_dim)
        self.ip_adapter_img_norm_cond = nn.LayerNorm(self.config.text_dim)
        for block in self.blocks:
            block.attn2.add_image_branch()
        self._image_cache = None

    def image_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """IP-Adapter image tokens [B, N, text_dim] from embeddings [B, clip_dim]. The official layout puts the
        token index last before transposing, so token j takes every N-th projected feature (j, j + N, ...)."""
        width = self.config.text_dim
        projected = self.ip_adapter_clip_len_trans_block(image_embeds)
        tokens = projected.reshape(len(image_embeds), width, -1).transpose(1, 2)
        return self.ip_adapter_img_norm_cond(tokens)

    def image_context(self, image_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's image keys and values for ``image_embeds`` [B, clip_dim]: they depend on the reference
        image only, so they are kept and reused while the same embeddings come back (every sampling step)."""
        if not hasattr(self, "ip_adapter_clip_len_trans_block"):
            raise InputError("image_embeds needs an IP-Adapter on this DiT: call ipa.attach(dit) first")
        clip_dim = self.ip_adapter_clip_len_trans_block.in_features
        if image_embeds.ndim != 2 or image_embeds.shape[1] != clip_dim:
            raise InputError(f"image_embeds must have shape [B, {clip_dim}] (one image embedding per row); "
                             f"got {list(image_embeds.shape)}")
        embeds = image_embeds.to(self.device, self.dtype)
        cached = self._image_cache
        if (cached is None or cached[0].shape != embeds.shape or cached[0].device != embeds.device
                or cached[0].dtype != embeds.dtype or not torch.equal(cached[0], embeds)):
            tokens = self.image_tokens(embeds)
            self._image_cache = (embeds.clone(), [block.attn2.image_kv(tokens) for block in self.blocks])
        return self._image_cache[1]

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
        controls: Sequence[torch.Tensor] | None = None,
        image_embeds: torch.Tensor | None = None,
        i_scale: float = 1.0,
        t_scale: float = 1.0,
    ) -> torch.Tensor:
        """Denoise latents ``x`` [B, C, H, W] at timesteps ``t`` [B]; returns [B, out_channels, H, W].

        Give either the text inputs or a ``context`` from :meth:`text_context` (the fast path for sampling).
        ``image_rotary_emb`` (cos, sin) [S, head_dim] overrides the RoPE computed from the latent size.
        ``controls`` (a ControlNet's output, one [B, S, hidden] residual per long skip) are added to the skips:
        control i to the skip leaving block i, as the official model does.
        With an IP-Adapter attached, ``image_embeds`` [B, clip_dim] (L2-normalised image embeddings) adds the
        image branch to every cross-attention: ``t_scale * text + i_scale * image``; without it nothing changes.
        """
        cfg = self.config
        b, _, h, w = x.shape
        if controls is not None and len(controls) != self.config.skip_count:
            raise InputError(f"{len(controls)} controls for a DiT with {self.config.skip_count} skip connections; "
                             "expected one per skip (a ControlNet made for this DiT)")
        text = (encoder_hidden_states, text_embedding_mask, encoder_hidden_states_t5, text_embedding_mask_t5,
                image_meta_size, style)
        rope, context, c = self.conditioning(x, t, text, image_rotary_emb, context)
        x = self.x_embedder(x.to(self.dtype))
        if image_embeds is not None and len(image_embeds) != b:
            raise InputError(f"image_embeds has {len(image_embeds)} rows for a batch of {b} latents; give one per row")
        image_kv = self.image_context(image_embeds) if image_embeds is not None else [None] * cfg.depth
        skips = []
        for i, block in enumerate(self.blocks):
            skip = None
            if i > cfg.depth // 2:
                skip = skips.pop()
                if controls is not None:
                    skip = skip + controls[cfg.depth - 1 - i].to(skip)
            x = block(x, c, context.kv[i], rope, skip, image_kv[i], t_scale, i_scale)
            if i < self.config.skip_count:
                skips.append(x)
        x = self.final_layer(x, c)
        p, oc = cfg.patch_size, cfg.out_channels
        gh, gw = h // p, w // p
        x = x.view(b, gh, gw, p, p, oc).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, oc, gh * p, gw * p)
