"""``hunyuan-dit`` command line: generate images, write tiny test models, and the features' own subcommands."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .errors import HunyuanError


class ProgressBar:
    """A one-line step counter on stderr (no dependency, works in any terminal or log)."""

    def __init__(self, label: str, width: int = 30):
        self.label, self.width, self.start = label, width, time.monotonic()

    def __call__(self, step: int, total: int, *_: object) -> None:
        done = int(self.width * step / total)
        rate = step / max(time.monotonic() - self.start, 1e-9)
        end = "\n" if step == total else ""
        print(f"\r{self.label} [{'#' * done}{'.' * (self.width - done)}] {step}/{total} ({rate:.2f} it/s)",
              end=end, file=sys.stderr, flush=True)


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import load_pipeline
    from .tiny import make_tiny
    from .validate import check_generate

    check_generate(  # every argument, before any model loads
        prompt=args.prompt, negative_prompt=args.negative, device=args.device, width=args.width, height=args.height,
        steps=args.steps, guidance_scale=args.cfg, guidance_rescale=args.guidance_rescale, sampler=args.sampler,
        seed=args.seed, batch_size=args.batch, beta_end=args.beta_end,
    )
    model = args.model
    tmp = None
    if model == "tiny":
        tmp = tempfile.TemporaryDirectory(prefix="hunyuan-tiny-")
        model = make_tiny(Path(tmp.name), layout="official")
        print("note: --model tiny is a random 4 MB model built on the fly; it draws noise, not pictures", file=sys.stderr)
    try:
        pipe = load_pipeline(model, device=args.device, dtype=args.dtype, variant=args.variant,
                             bert_vocab=args.bert_vocab, beta_end=args.beta_end)
        out = pipe(args.prompt, negative_prompt=args.negative, width=args.width, height=args.height, steps=args.steps,
                   guidance_scale=args.cfg, seed=args.seed, sampler=args.sampler, batch_size=args.batch,
                   guidance_rescale=args.guidance_rescale, progress=ProgressBar("sampling"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    images = out.images
    if args.upscale:
        from .upscaler import upscale_images

        images = upscale_images(images, args.upscale, device=args.device, progress=ProgressBar("upscaling"))
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (img, seed) in enumerate(zip(images, out.seeds)):
        path = args.out / f"hunyuan_{seed}_{i:02d}.png"
        img.save(path)
        print(path)
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from .tiny import make_tiny

    print(make_tiny(args.dir, layout=args.layout, version=args.version, seed=args.seed))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import save_pipeline
    from .pipeline import load_pipeline

    pipe = load_pipeline(args.model, device="cpu", dtype=args.dtype, variant=args.variant, bert_vocab=args.bert_vocab)
    print(save_pipeline(pipe, args.out, args.layout))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="hunyuan-dit", description="Tencent Hunyuan-DiT text-to-image.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="draw images from a prompt")
    g.add_argument("--model", required=True, help="official ckpts folder, diffusers folder, all-in-one .safetensors, or 'tiny'")
    g.add_argument("--prompt", required=True, help="what to draw (Chinese or English)")
    g.add_argument("--negative", default=None, help="what to avoid (default: the official negative prompt)")
    g.add_argument("--width", type=int, default=1024, help="multiple of 16 (official sizes: 1024x1024, 1280x768, ...)")
    g.add_argument("--height", type=int, default=1024)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--cfg", type=float, default=6.0, help="guidance scale")
    g.add_argument("--guidance-rescale", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=42, help="image i of a batch uses seed + i")
    g.add_argument("--sampler", default="ddpm", choices=SAMPLERS)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--variant", default=None, help="official weights: ema, module, distill or merge")
    g.add_argument("--beta-end", type=float, default=None, help="override the release's schedule end (0.02 = official v1.2 inference)")
    g.add_argument("--bert-vocab", default=None, help="BERT vocab.txt for an all-in-one file")
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", default=None, choices=["auto", "fp16", "bf16", "fp32"])
    g.add_argument("--upscale", default=None, help="super-resolution model to apply to each image")
    g.add_argument("--out", type=Path, default=Path("outputs"))
    g.set_defaults(func=_generate)

    t = sub.add_parser("make-tiny", help="write a tiny random model in a real file layout (for tests and install checks)")
    t.add_argument("dir", type=Path)
    t.add_argument("--layout", default="official", choices=["official", "diffusers", "comfy"])
    t.add_argument("--version", default="1.2", choices=["1.2", "1.1"])
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_make_tiny)

    c = sub.add_parser("convert", help="rewrite a model in another file layout (official, diffusers, comfy)")
    c.add_argument("--model", required=True, help="official ckpts folder, diffusers folder or all-in-one .safetensors")
    c.add_argument("--layout", required=True, choices=["official", "diffusers", "comfy"])
    c.add_argument("--out", type=Path, required=True, help="folder (or .safetensors path for comfy)")
    c.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="stored precision (default fp16)")
    c.add_argument("--variant", default=None, help="official weights: ema, module, distill or merge")
    c.add_argument("--bert-vocab", default=None, help="BERT vocab.txt for an all-in-one file")
    c.set_defaults(func=_convert)

    from .rewriter.cli import add_parser as add_chat
    from .upscaler.cli import add_parser as add_upscale

    add_upscale(sub)
    add_chat(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; a problem the user can fix prints one line and exits 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HunyuanError as exc:
        print(f"hunyuan-dit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hunyuan-dit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
