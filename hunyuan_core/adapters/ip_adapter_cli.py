"""The IP-Adapter on the command line: ``generate --ip-adapter/--image-encoder/--ip-image/--ip-scale`` and
``hunyuan-dit convert-image-encoder SRC OUT.safetensors``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import InputError
from ..images import open_image
from ..sampling.image_prompt import ImagePrompt, check_ip_scale
from ..settings.devices import DTYPES
from .ip_adapter import IPAdapter, load_ip_adapter


def add_generate_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("--ip-adapter", default=None, help="Hunyuan-DiT v1.2 IP-Adapter (ipa.pt): draw like --ip-image")
    g.add_argument("--image-encoder", default=None,
                   help="its CLIP image encoder: clip_img_encoder.pt or the .safetensors of convert-image-encoder")
    g.add_argument("--ip-image", action="append", default=[], type=Path, metavar="IMG",
                   help="reference image for the IP-Adapter; repeatable (the embeddings are averaged)")
    g.add_argument("--ip-scale", type=float, default=1.0, help="weight of the reference image (official default 1.0)")


def image_prompt_from_args(args: argparse.Namespace, device: torch.device) -> tuple[IPAdapter | None, ImagePrompt | None]:
    """Everything the image prompt needs, checked and encoded before the DiT loads; the image encoder is
    dropped afterwards, so it never shares memory with the DiT."""
    wanted = (args.ip_adapter, args.image_encoder, args.ip_image)
    if not any(wanted):
        return None, None
    if not all(wanted):
        raise InputError("an image prompt needs --ip-adapter, --image-encoder and at least one --ip-image")
    images = [open_image(path) for path in args.ip_image]
    check_ip_scale(args.ip_scale)  # before the encoder loads
    adapter = load_ip_adapter(args.ip_adapter, image_encoder=args.image_encoder, device=device)
    prompt = ImagePrompt(adapter.encode_image(images), scale=args.ip_scale)
    adapter.image_encoder = None
    return adapter, prompt


def _convert(args: argparse.Namespace) -> int:
    from .image_encoder import convert_image_encoder

    print(convert_image_encoder(args.src, args.out, overwrite=args.overwrite, dtype=DTYPES[args.dtype]))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("convert-image-encoder",
                       help="extract the IP-Adapter's image tower from clip_img_encoder.pt (6.75 GB -> 1.3 GB)")
    c.add_argument("src", type=Path, help="the official clip_img_encoder.pt")
    c.add_argument("out", type=Path, help="the .safetensors file to write (e.g. ComfyUI/models/clip_vision/...)")
    c.add_argument("--dtype", default="fp16", choices=[n for n, d in DTYPES.items() if d is not None],
                   help="stored precision (default fp16: 1.3 GB; the encoder runs in the precision it is loaded in)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    c.set_defaults(func=_convert)
