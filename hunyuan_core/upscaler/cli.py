"""``hunyuan-dit upscale``: super-resolve image files with an ESRGAN-family or other SR model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..images import open_image
from ..settings.devices import DTYPES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _inputs(paths: list[Path]) -> list[Path]:
    """The files named, with folders expanded to the regular image files directly inside them (a FIFO or
    device named ``*.png`` would block the run forever)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise InputError(f"input '{path}' is not a regular image file or a folder")
        else:
            raise InputError(f"input image '{path}' does not exist")
    if not files:
        raise InputError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def run(args: argparse.Namespace) -> int:
    """Upscale every input into ``--out`` as ``<name>_x<scale>.png`` (PNG keeps alpha); prints each path.

    Inputs, the output folder and the model are checked before the first image is worked on; an existing output
    is never replaced without ``--overwrite`` (``photo.png`` and ``photo.jpg`` both keep their results).
    """
    from ..cli import save_images
    from ..outputs import check_writable_dir
    from ..progress import TqdmProgress
    from .upscaler import load_upscaler

    files = _inputs(args.inputs)
    check_writable_dir(args.out)
    upscaler = load_upscaler(args.model, device=args.device, dtype=args.dtype)
    factor = args.scale if args.scale is not None else upscaler.scale
    for path in files:
        bar = TqdmProgress(desc=path.name, unit="tile")
        try:
            result = upscaler(open_image(path), tile=args.tile, overlap=args.overlap, scale=args.scale, progress=bar)
        finally:
            bar.close()
        save_images([result], [f"{path.stem}_x{factor:g}"], args.out, args.overwrite)
    return 0


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
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of numbering new ones")
    p.add_argument("--dtype", default="auto", choices=list(DTYPES), help="auto: fp16 on GPUs, fp32 on the CPU")
    p.set_defaults(func=run)
    return p
