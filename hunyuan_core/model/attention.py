"""Self- and cross-attention of a Hunyuan-DiT block: per-head LayerNorm on q/k, 2-D RoPE, SDPA.

Scores go through ``F.scaled_dot_product_attention``, whose kernels accumulate in fp32; the official
fp16 path that multiplied q and k in half precision produced black images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

Rope = torch.Tensor  # complex rotations [S, head_dim / 2], see rope.rope_freqs


class SelfAttention(nn.Module):
    """Image-token self-attention (``attn1``): fused ``Wqkv``, RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.Wqkv(x).view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q), rope)
        k = apply_rope(self.k_norm(k), rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, -1))


class CrossAttention(nn.Module):
    """Image-to-text attention (``attn2``): q from image tokens (RoPE on q only), k/v from the 333 text tokens.

    An IP-Adapter adds a decoupled image branch (:meth:`add_image_branch`): the same query also attends to the
    adapter's image tokens through their own ``kv_proj_ip_adapter`` / ``k_norm_ip_adapter``, and the two
    results mix as ``t_scale * text + i_scale * image`` before ``out_proj``.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(context_dim, 2 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.out_proj = nn.Linear(dim, dim)

    def add_image_branch(self) -> None:
        """Create the IP-Adapter's key/value projection and key norm (official names), shaped like the text ones."""
        self.kv_proj_ip_adapter = nn.Linear(self.kv_proj.in_features, self.kv_proj.out_features)
        self.k_norm_ip_adapter = nn.LayerNorm(self.head_dim, eps=1e-6)

    def _kv(self, proj: nn.Linear, norm: nn.LayerNorm, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = tokens.shape[0]
        k, v = proj(tokens).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return norm(k), v

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised keys and values of the text tokens [B, heads, L, head_dim]; constant over sampling steps."""
        return self._kv(self.kv_proj, self.k_norm, context)

    def image_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the IP-Adapter's image tokens [B, heads, N, head_dim] (no RoPE, as for text)."""
        return self._kv(self.kv_proj_ip_adapter, self.k_norm_ip_adapter, tokens)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], rope: Rope,
                image_kv: tuple[torch.Tensor, torch.Tensor] | None = None, t_scale: float = 1.0,
                i_scale: float = 1.0) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(self.q_norm(q), rope)
        out = F.scaled_dot_product_attention(q, *kv)
        if image_kv is not None:  # scaled scores, as the trained (flash-attention) path computes them
            out = t_scale * out + i_scale * F.scaled_dot_product_attention(q, *image_kv)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, -1))
