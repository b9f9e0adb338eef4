"""The upscaler: load any supported SR weights, then upscale images tile by tile.

``load_upscaler`` recognises the built-in architectures (RRDBNet, SRVGGNetCompact) from the weights and
hands any other file to spandrel when it is installed (ComfyUI always has it). An :class:`Upscaler`
takes PIL images or ``[B, C, H, W]`` tensors (as the rest of the core), keeps alpha and gray, resizes to a target scale, halves the
tile and carries on when the device runs out of memory, and reports progress per tile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import HunyuanError, InputError, ModelFileError
from ..formats.files import read_checkpoint, unwrap_state_dict
from ..images import pil_to_tensor, tensor_to_pil
from ..settings.devices import release_cached_memory, resolve_device, resolve_dtype
from ..settings.limits import MAX_UPSCALE_FACTOR
from ..settings.validate import check_float, check_int
from ..tiling import is_out_of_memory, plan_tiles, run_tiles
from . import images as im
from .detect import CONTAINER_KEYS, build, detect, strip_prefix

logger = logging.getLogger("hunyuan_dit")

StateDict = dict[str, torch.Tensor]
Progress = Callable[[int, int], None]
MIN_TILE = 64


class Upscaler:
    """A loaded super-resolution network plus the tiling that applies it to images of any size.

    Attributes: ``architecture`` (e.g. ``"RRDBNet"``), ``scale`` (native factor), ``channels`` (1 or 3),
    ``model`` (the ``torch.nn.Module``), ``device``, ``dtype``. ``align``: tile origins are multiples of
    it (pixel-unshuffle models); ``tiling=False`` runs whole images (models that tile internally);
    ``channels_last``: tiles go in NHWC layout, in which RRDBNet and SRVGGNetCompact ran 1.6x faster
    with 30% less memory than in NCHW on the CPU (torch 2.13); ``call``: what runs a tile when it is
    not ``model`` itself (a spandrel descriptor).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        architecture: str,
        scale: int,
        channels: int,
        *,
        align: int = 1,
        half: bool = True,
        bfloat16: bool = True,
        tiling: bool = True,
        channels_last: bool = True,
        call: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if channels not in (1, 3):
            raise ModelFileError(
                f"{architecture} model takes {channels}-channel images; only gray (1) and colour (3) models are supported"
            )
        self.model = model
        self.architecture = architecture
        self.scale = scale
        self.channels = channels
        self.align = align
        self.tiling = tiling
        self._layout = torch.channels_last if channels_last else torch.contiguous_format
        self._dtypes = {torch.float32} | ({torch.float16} if half else set()) | ({torch.bfloat16} if bfloat16 else set())
        self._call = call if call is not None else model

    def __repr__(self) -> str:
        return f"Upscaler({self.architecture}, x{self.scale}, {self.channels}ch, {self.device}, {self.dtype})"

    @classmethod
    def from_spandrel(cls, descriptor: Any) -> Upscaler:
        """Wrap a spandrel ``ImageModelDescriptor`` (what ComfyUI's ``UPSCALE_MODEL`` is)."""
        if descriptor.input_channels != descriptor.output_channels:
            raise ModelFileError(
                f"{descriptor.architecture.name} maps {descriptor.input_channels} channels to "
                f"{descriptor.output_channels}; an upscaler must return what it takes"
            )
        tiling = getattr(getattr(descriptor, "tiling", None), "name", "SUPPORTED")
        return cls(
            descriptor.model,
            str(descriptor.architecture.name),
            int(descriptor.scale),
            int(descriptor.input_channels),
            align=max(1, int(descriptor.size_requirements.multiple_of)),
            half=bool(descriptor.supports_half),
            bfloat16=bool(descriptor.supports_bfloat16),
            tiling=tiling != "INTERNAL",
            channels_last=False,  # some architectures reshape with view(), which needs the plain layout
            call=descriptor,  # pads to the architecture's size needs, crops back
        )

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype, which tiles are cast to."""
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Upscaler:
        """Move/cast the weights; a dtype the architecture cannot run in falls back to float32."""
        if dtype is not None and dtype not in self._dtypes:
            logger.warning("%s does not run in %s; using float32", self.architecture, dtype)
            dtype = torch.float32
        self.model.to(device=torch.device(device) if device is not None else None, dtype=dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on ``[N, channels, h, w]`` in 0..1 (any device/dtype); returns 0..1 in the model's dtype."""
        with torch.inference_mode():
            # A copy with canonical strides: odd strides of a size-1 dimension send oneDNN down a slower path.
            x = x.to(device=self.device, dtype=self.dtype, memory_format=self._layout, copy=True)
            return self._call(x).clamp_(0, 1)

    def count_tiles(self, batch: int, height: int, width: int, tile: int = 512, overlap: int = 32) -> int:
        """How many tiles (progress steps) a call on ``batch`` images of ``height`` × ``width`` takes."""
        if not self.tiling:
            return batch
        return batch * len(plan_tiles(height, width, tile, overlap, self.align))

    def memory_estimate(self, tile: int = 512) -> int:
        """Bytes one tile needs on the device besides the weights: ComfyUI's rule of thumb (384 × the
        tile's input bytes × scale); bench/bench_upscaler.py measures 2-8x less for the built-in networks."""
        element = torch.finfo(self.dtype).bits // 8
        return int(tile * tile * 3 * element * max(self.scale, 1) * 384)

    # ------------------------------------------------------------------------------------- calling
    def __call__(
        self,
        image: Image.Image | Sequence[Image.Image] | torch.Tensor,
        tile: int = 512,
        overlap: int = 32,
        scale: float | None = None,
        progress: Progress | None = None,
        cancel: Callable[[], None] | None = None,
    ) -> Image.Image | list[Image.Image] | torch.Tensor:
        """Upscale a PIL image, a list of them, or a ``[B, C, H, W]`` float tensor (returned alike).

        ``tile``/``overlap`` are in input pixels; ``scale`` (default: the model's) resizes the result
        after super-resolution; ``progress(done, total)`` is called after every tile, ``cancel()``
        before every tile (it raises to stop).
        """
        tile, overlap = check_int("tile", tile, 1), check_int("overlap", overlap, 0)
        if scale is not None:
            scale = check_float("scale", scale, 0.0, MAX_UPSCALE_FACTOR, lo_open=True)
        run = _Run(self, tile, overlap, scale, progress, cancel)
        if isinstance(image, Image.Image):
            return tensor_to_pil(run([pil_to_tensor(image)])[0], image.mode)
        if isinstance(image, torch.Tensor):
            im.check_batch(image)
            return torch.cat(run([image[i : i + 1] for i in range(image.shape[0])]))
        if isinstance(image, Sequence) and all(isinstance(i, Image.Image) for i in image):
            return [tensor_to_pil(t, i.mode) for t, i in zip(run([pil_to_tensor(i) for i in image]), image)]
        raise InputError(f"expected a PIL image, a list of them or a [B, C, H, W] tensor; got {type(image).__name__}")


class _Run:
    """One call of an :class:`Upscaler`: images ``[1, C, H, W]`` in, upscaled ones out, one tile plan per image."""

    def __init__(self, up: Upscaler, tile: int, overlap: int, scale: float | None,
                 progress: Progress | None, cancel: Callable[[], None] | None):
        self.up, self.tile, self.overlap, self.target = up, tile, overlap, scale
        self.progress, self.cancel = progress, cancel
        self.done = self.total = 0

    def _tiles(self, h: int, w: int) -> int:
        return self.up.count_tiles(1, h, w, self.tile, self.overlap)

    def _after_tile(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def __call__(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        factor = self.up.scale if self.target is None else self.target
        for image in batch:  # every image's result size is checked before the first tile runs
            im.output_size(*image.shape[-2:], factor)
        self.total = sum(self._tiles(*t.shape[-2:]) for t in batch)
        return [self._one(image, batch[i + 1 :]) for i, image in enumerate(batch)]

    def _one(self, image: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor:
        up = self.up
        h, w = image.shape[-2:]
        colour, alpha = im.split_alpha(image.float())
        x = im.colour_to_model(colour, up.channels)
        while True:
            start = self.done
            tile = self.tile if up.tiling else max(h, w)
            plan = plan_tiles(h, w, tile, self.overlap, up.align)
            try:
                result = run_tiles(up.forward, x, up.scale, plan, self.cancel, self._after_tile)
                break
            except (RuntimeError, MemoryError) as exc:
                if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)) or not up.tiling:
                    raise
                if self.tile // 2 < MIN_TILE:
                    raise HunyuanError(
                        f"out of memory upscaling a {w}x{h} image even with {self.tile}-pixel tiles on "
                        f"{up.device}; free memory or use a smaller model"
                    ) from exc
            release_cached_memory(up.device)  # outside the except block, so the failed tile's tensors are already freed
            self.tile //= 2
            logger.warning("upscaler: out of memory, retrying with %d-pixel tiles", self.tile)
            self.done = start
            self.total = start + sum(self._tiles(*t.shape[-2:]) for t in [image, *rest])
        colour = im.colour_from_model(result, colour.shape[1], up.channels)
        out_h, out_w = im.output_size(h, w, up.scale if self.target is None else self.target)
        colour = im.resize(colour, out_h, out_w)
        if alpha is None:
            return colour
        return torch.cat([colour, im.resize(alpha, out_h, out_w, mode="bilinear")], 1)


# ------------------------------------------------------------------------------------------ loading
def _spandrel_upscaler(sd: StateDict, where: str, found: str) -> Upscaler:
    try:
        import spandrel
    except ImportError:
        raise ModelFileError(
            f"{where}: not a model this package knows: expected ESRGAN/Real-ESRGAN RRDBNet keys "
            f"(conv_first.*, body.N.rdbK.*, or model.0.*, model.1.sub.N.RDBK.*) or SRVGGNetCompact keys "
            f"(body.N.weight); found {found}. Other architectures need spandrel: pip install spandrel"
        ) from None
    except Exception as exc:  # installed but broken (e.g. a torchvision built for another torch)
        raise ModelFileError(
            f"{where}: not a built-in architecture (found {found}), and spandrel, which would handle it, "
            f"fails to import: {type(exc).__name__}: {exc}"
        ) from None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise ModelFileError(
            f"{where}: not a super-resolution model: neither this package nor spandrel "
            f"{spandrel.__version__} recognises its weights (found {found})"
        ) from None
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{where}: spandrel recognised the file but could not load it: {exc}") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelFileError(
            f"{where}: {descriptor.architecture.name} is not a single-image model (it needs a mask); "
            "an upscaler takes one image"
        )
    return Upscaler.from_spandrel(descriptor.eval())


def load_upscaler(
    path: str | os.PathLike | StateDict,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Upscaler:
    """Load SR weights (``.safetensors``/``.pth``/...) or a state dict and detect architecture and scale.

    Built in: RRDBNet (ESRGAN, Real-ESRGAN ``params_ema``/``params``, BSRGAN; x4, x2/x1 with
    pixel-unshuffle, x8) and SRVGGNetCompact; any other architecture goes to spandrel if installed.
    ``device`` and ``dtype`` follow :mod:`hunyuan_core.settings.devices` (the GPU when there is one; fp16
    there, fp32 on the CPU).
    """
    where = "upscale model" if isinstance(path, dict) else f"upscale model '{path}'"
    raw = path if isinstance(path, dict) else read_checkpoint(path, what="upscale model")
    sd = strip_prefix(unwrap_state_dict(raw, CONTAINER_KEYS, where))
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    detected = detect(sd, where)
    if detected is None:
        found = ", ".join(sorted(sd)[:6]) + (", ..." if len(sd) > 6 else "")
        return _spandrel_upscaler(sd, where, found).to(device, dtype)
    model = build(detected, device, dtype, where)
    return Upscaler(model, detected.architecture, detected.scale, detected.channels, align=detected.align)


def upscale_images(
    images: Sequence[Image.Image],
    model: str | os.PathLike | Upscaler,
    scale: float | None = None,
    tile: int = 512,
    overlap: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> list[Image.Image]:
    """Upscale PIL images with a model file (loaded once) or a loaded :class:`Upscaler` (``generate --upscale``)."""
    upscaler = model if isinstance(model, Upscaler) else load_upscaler(model, device=device, dtype=dtype)
    return upscaler(list(images), tile=tile, overlap=overlap, scale=scale, progress=progress)
