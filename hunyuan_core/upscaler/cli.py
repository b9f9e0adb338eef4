"""``hunyuan-dit upscale``: super-resolve image files with an ESRGAN-family or other SR model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _inputs(paths: list[Path]) -> list[Path]:
    """The files named, with folders expanded to the images directly inside them."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input image '{path}' does not exist")
    if not files:
        raise InputError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image '{path}': {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Upscale every input into ``--out`` as ``<name>_x<scale>.png`` (PNG keeps alpha); prints each path."""
    from .upscaler import load_upscaler

    files = _inputs(args.inputs)
    upscaler = load_upscaler(args.model, device=args.device, dtype=DTYPES[args.dtype])
    args.out.mkdir(parents=True, exist_ok=True)
    factor = args.scale if args.scale is not None else upscaler.scale
    for path in files:
        result = upscaler(_open(path), tile=args.tile, overlap=args.overlap, scale=args.scale,
                          progress=lambda done, total, name=path.name: _progress(name, done, total))
        target = args.out / f"{path.stem}_x{factor:g}.png"
        result.save(target)
        print(target)
    return 0


def _progress(name: str, done: int, total: int) -> None:
    print(f"\r{name}: tile {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``upscale`` on the ``hunyuan-dit`` command line."""
    p = subparsers.add_parser(
        "upscale", help="super-resolve images with an ESRGAN/Real-ESRGAN (or spandrel) model",
        description="Upscale images tile by tile with feathered seams; memory is bounded by the tile.",
    )
    p.add_argument("--model", required=True,
                   help="SR weights: RealESRGAN_x4plus.pth, 4x-UltraSharp.pth, realesr-general-x4v3.pth, ...")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--scale", type=float, default=None,
                   help="final scale (default: the model's own; others resize after SR)")
    p.add_argument("--tile", type=int, default=512,
                   help="tile side in input pixels (halved automatically on out-of-memory)")
    p.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles, blended")
    p.add_argument("--device", default=None, help="cuda, cpu, mps, cuda:1, ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default="auto", choices=list(DTYPES), help="auto: fp16 on GPUs, fp32 on the CPU")
    p.set_defaults(func=run)
    return p
