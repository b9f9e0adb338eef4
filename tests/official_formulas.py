"""Direct transcriptions of formulas from the official Tencent HunyuanDiT code (numpy, as written there),
used as independent references by the tests. Source: reference/hunyuandit-official.md §1.3."""

from __future__ import annotations

import numpy as np


def official_fill_resize_and_crop(src, tgt):
    th, tw = (tgt, tgt)
    h, w = src
    tr = th / tw
    r = h / w
    if r > tr:
        resize_height = th
        resize_width = int(round(th / h * w))
    else:
        resize_width = tw
        resize_height = int(round(tw / w * h))
    crop_top = int(round((th - resize_height) / 2.0))
    crop_left = int(round((tw - resize_width) / 2.0))
    return (crop_top, crop_left), (crop_top + resize_height, crop_left + resize_width)


def _official_1d(dim, pos, theta=10000.0):
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2)[: dim // 2].astype(np.float32) / dim))
    freqs = np.outer(pos, freqs.astype(np.float64)).astype(np.float32)
    return np.repeat(np.cos(freqs), 2, axis=1), np.repeat(np.sin(freqs), 2, axis=1)


def official_rope(head_dim, height_px, width_px, patch=2):
    """calc_rope(height, width) of hydit/inference.py with use_real=True -> (cos, sin) [HW, head_dim]."""
    th, tw = height_px // 8 // patch, width_px // 8 // patch
    base_size = 512 // 8 // patch
    start, stop = official_fill_resize_and_crop((th, tw), base_size)
    grid_h = np.linspace(start[0], stop[0], th, endpoint=False, dtype=np.float32)
    grid_w = np.linspace(start[1], stop[1], tw, endpoint=False, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first
    emb_h = _official_1d(head_dim // 2, grid[0].reshape(-1))
    emb_w = _official_1d(head_dim // 2, grid[1].reshape(-1))
    return np.concatenate([emb_h[0], emb_w[0]], axis=1), np.concatenate([emb_h[1], emb_w[1]], axis=1)


def official_apply_rotary(x, cos, sin):
    """apply_rotary_emb(use_real=True) of hydit/modules/attn_layers.py on [B, S, H, D] (numpy, float32)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]
