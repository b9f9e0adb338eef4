"""Conditioning embedders of Hunyuan-DiT: sinusoidal timestep features, the MLP embedder and the T5 pooler."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of scalars ``t`` [N] -> [N, dim], cosine half first (as the official code)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FP32SiLU(nn.Module):
    """SiLU computed in fp32 (fp16 inputs would lose the small negative tail)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x.float()).to(x.dtype)


def mlp_embedder(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear -> fp32 SiLU -> Linear; official keys ``.0`` and ``.2`` (used by ``mlp_t5`` and ``extra_embedder``)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), FP32SiLU(), nn.Linear(hidden, out_dim))


class TimestepEmbedder(nn.Module):
    """Diffusion timestep -> conditioning vector (``t_embedder.mlp.{0,2}``)."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim).to(self.mlp[0].weight.dtype))


class AttentionPool(nn.Module):
    """CLIP-style attention pooling of the mT5 states (``pooler.*``).

    The query is the mean of all token states (padding included, as in the official model) plus a learned
    position; keys/values are every token. One output vector per prompt.
    """

    def __init__(self, seq_len: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(seq_len + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        b, n, c = x.shape
        heads = lambda t: t.view(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x[:, :1])), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c)
        return self.c_proj(out)
