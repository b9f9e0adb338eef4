"""Running a network tile by tile with feathered overlaps: memory bounded by the tile, no visible seams.

Used by the upscaler (super-resolution, x1..x8) and the VAE's tiled decode (x8 from latents to pixels).

Tiles form a grid of equal tiles spread evenly; neighbours share at least ``overlap`` input pixels.
Inside a shared band each tile's weight is 0 over the quarter of the band next to its own cut edge
(where missing context makes its output wrong), rises linearly across the middle half, and is 1
beyond. Where a tile meets the image border it keeps full weight, since the whole-image run sees the
same border. The grid makes the weights separable, so each axis is normalised once and tiles are
added straight into the output: no weight image, no second pass. A network whose receptive field
reaches no further than a quarter of the shared band therefore gives exactly its whole-image result;
real networks, whose far context matters little, differ from it only by that little, smoothly.
``margin`` sets that zero-weight part (a quarter by default); the VAE decodes with ``margin=0``, a cross-fade
over the whole band, because its windows differ everywhere (per-window GroupNorm statistics), not only
near their cut edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Span = tuple[int, int]


@dataclass(frozen=True)
class TilePlan:
    """The grid of tiles over one image, in input pixels: ``rows`` × ``cols`` spans ``(start, end)``."""

    height: int
    width: int
    rows: list[Span]
    cols: list[Span]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)


def _axis_spans(size: int, tile: int, overlap: int, align: int) -> list[Span]:
    """As few tiles as cover ``size`` with at least ``overlap`` shared, all of one length, evenly spread
    (so no sliver of a last tile is computed at full cost)."""
    if size <= tile:
        return [(0, size)]
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil(math.ceil((size + (n - 1) * overlap) / n) / align) * align
    starts = sorted({i * (size - length) // (n - 1) // align * align for i in range(n)})
    return [(s, s + length) for s in starts[:-1]] + [(starts[-1], size)]


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> TilePlan:
    """Lay tiles of at most ``tile`` (+ ``align`` - 1 at the far edge) pixels over an image.

    ``tile`` and ``overlap`` are rounded down to multiples of ``align`` so every tile starts on the
    pixel grid the network needs (pixel-unshuffle models: 2 or 4); ``overlap`` is capped at half the
    tile so that tiles always advance.
    """
    tile = max(align, tile // align * align)
    overlap = max(0, min(overlap, tile // 2) // align * align)
    return TilePlan(height, width, _axis_spans(height, tile, overlap, align), _axis_spans(width, tile, overlap, align))


def _ramp(distance: torch.Tensor, shared: int, margin: float) -> torch.Tensor:
    """Weight by distance from a cut edge whose band with the neighbour is ``shared`` pixels wide: 0 over the
    first ``margin`` of the band, rising linearly to 1 at ``1 - margin`` of it."""
    if shared <= 0:
        return torch.ones_like(distance)
    return ((distance - shared * margin) / (shared * (1 - 2 * margin))).clamp(0, 1)


def _axis_weights(spans: list[Span], scale: int, margin: float) -> list[torch.Tensor]:
    """Normalised 1-D blend weights per span, at output resolution."""
    if len(spans) == 1:
        return [torch.ones((spans[0][1] - spans[0][0]) * scale)]
    raw = []
    for i, (start, end) in enumerate(spans):
        u = (torch.arange(start * scale, end * scale, dtype=torch.float64) + 0.5) / scale
        w = torch.ones_like(u)
        if i > 0:
            w = torch.minimum(w, _ramp(u - start, spans[i - 1][1] - start, margin))
        if i < len(spans) - 1:
            w = torch.minimum(w, _ramp(end - u, end - spans[i + 1][0], margin))
        raw.append(w)
    total = torch.zeros(spans[-1][1] * scale, dtype=torch.float64)
    for (start, end), w in zip(spans, raw):
        total[start * scale : end * scale] += w
    return [(w / total[start * scale : end * scale]).float() for (start, end), w in zip(spans, raw)]


def run_tiles(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    plan: TilePlan,
    before_tile: Callable[[], None] | None = None,
    after_tile: Callable[[], None] | None = None,
    margin: float = 0.25,
) -> torch.Tensor:
    """Apply ``forward`` to ``image`` ``[N, C, H, W]`` tile by tile; returns float32 ``[N, C', H*scale, W*scale]``
    on the image's device, ``C'`` being what ``forward`` returns (the VAE decodes 4 latent channels to 3).

    ``forward`` maps a tile to its ``scale`` times larger result (any device/dtype); ``before_tile`` may raise
    to stop (interruption), ``after_tile`` reports progress; ``margin`` (0 <= margin < 0.5) is the part of each
    shared band next to a tile's cut edge where that tile has no weight.
    """
    n, _, h, w = image.shape
    out = None
    row_w = [t.to(image.device) for t in _axis_weights(plan.rows, scale, margin)]
    col_w = [t.to(image.device) for t in _axis_weights(plan.cols, scale, margin)]
    for (y0, y1), wy in zip(plan.rows, row_w):
        for (x0, x1), wx in zip(plan.cols, col_w):
            if before_tile is not None:
                before_tile()
            result = forward(image[:, :, y0:y1, x0:x1]).to(device=image.device, dtype=torch.float32)
            if len(plan) == 1:  # the result is the output: no accumulator, no weights
                out = result
            else:
                if out is None:
                    out = torch.zeros(n, result.shape[1], h * scale, w * scale, device=image.device)
                out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale].addcmul_(result, wy[:, None] * wx[None, :])
            if after_tile is not None:
                after_tile()
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocator failure on any device (CUDA, MPS, CPU), which a smaller tile may avoid."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
