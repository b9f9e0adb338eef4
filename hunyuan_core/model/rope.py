"""2-D rotary position embedding of Hunyuan-DiT (the official "base512" interpolated scheme).

Token positions are not integers: the (h, w) token grid is fitted into a 32x32 box (512 px / 8 / patch 2),
centred, and sampled with ``linspace(start, stop, n, endpoint=False)``. So 1024x1024 uses positions
0, 0.5, ..., 31.5 on both axes, and 768x1280 (HxW) rows 6..25 and columns 0..32.
Half of each head's channels encode the column (width) coordinate, the other half the row; pairs of
neighbouring channels rotate together (interleaved form). See reference/hunyuandit-official.md §1.3.
"""

from __future__ import annotations

import torch

BASE_SIZE = 512 // 8 // 2  # the token-grid box every resolution is fitted into
ROPE_THETA = 10000.0


def get_fill_resize_and_crop(src: tuple[int, int], tgt: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Fit an (h, w) grid into a ``tgt`` x ``tgt`` box keeping its aspect; return ((top, left), (bottom, right))."""
    h, w = src
    if h / w > 1.0:
        resize_h, resize_w = tgt, int(round(tgt / h * w))
    else:
        resize_w, resize_h = tgt, int(round(tgt / w * h))
    top = int(round((tgt - resize_h) / 2.0))
    left = int(round((tgt - resize_w) / 2.0))
    return (top, left), (top + resize_h, left + resize_w)


def _axis_positions(start: int, stop: int, num: int) -> torch.Tensor:
    # numpy's linspace(start, stop, num, endpoint=False), in float64 like the official code
    return start + torch.arange(num, dtype=torch.float64) * ((stop - start) / num)


def _axis_cos_sin(dim: int, pos: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))
    angles = torch.outer(pos, freqs.double()).float()
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def rope_2d(
    head_dim: int, grid_h: int, grid_w: int, base_size: int = BASE_SIZE, theta: float = ROPE_THETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cos, sin), each ``[grid_h * grid_w, head_dim]`` fp32, tokens in row-major order."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    (top, left), (bottom, right) = get_fill_resize_and_crop((grid_h, grid_w), base_size)
    rows = _axis_positions(top, bottom, grid_h)
    cols = _axis_positions(left, right, grid_w)
    col_pos = cols.repeat(grid_h)  # meshgrid(w, h)[0], flattened row-major
    row_pos = rows.repeat_interleave(grid_w)
    cos_w, sin_w = _axis_cos_sin(head_dim // 2, col_pos, theta)
    cos_h, sin_h = _axis_cos_sin(head_dim // 2, row_pos, theta)
    return torch.cat([cos_w, cos_h], dim=1), torch.cat([sin_w, sin_h], dim=1)


def rope_freqs(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(cos, sin) [S, D] with each angle repeated for its channel pair -> complex rotations [S, D/2]."""
    return torch.complex(cos[:, ::2].float(), sin[:, ::2].float())


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (x[2i], x[2i+1]) of ``x`` [..., S, D] by complex ``freqs`` [S, D/2].

    Equal to ``x * cos + rotate_half(x) * sin`` of the official code (a pair is one complex number), in
    fp32, and several times faster than building the rotated copy.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * freqs).flatten(-2).to(x.dtype)
