"""``hunyuan-dit`` command line: generate images, write tiny test models, and the features' own subcommands."""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HunyuanError, OutputError
from .outputs import check_writable_dir, save_new

if TYPE_CHECKING:
    from PIL import Image

# File-system refusals that name a user's path (unreadable file, read-only or missing folder, full disk, ...):
# the user can act on them, so main() prints one line. Any other OSError is a bug and keeps its traceback.
USER_PATH_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST", "ENOSPC", "EDQUOT", "ENAMETOOLONG",
    "ELOOP", "ETXTBSY") if hasattr(errno, name))


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


def save_images(images: Sequence[Image.Image], stems: Sequence[str], out: Path, overwrite: bool = False) -> list[Path]:
    """Save each image as ``out/<stem>.png`` and print its path; an existing file is never replaced unless
    ``overwrite`` (the name gets ComfyUI's ``_00001_`` counter instead).

    If ``out`` fails part-way (disk full, folder removed or replaced), the images not yet saved go to a new
    folder in the system temp dir and :class:`OutputError` says where, so finished work is never dropped.
    """
    saved: list[Path] = []
    try:
        for img, stem in zip(images, stems):
            saved.append(_save_png(img, out, stem, overwrite))
        return saved
    except (OutputError, OSError) as exc:
        problem = f"could not save into '{out}': {_reason(exc)}"
    rest = list(zip(images, stems))[len(saved):]
    try:
        rescue = Path(tempfile.mkdtemp(prefix="hunyuan-rescued-"))
        for img, stem in rest:
            _save_png(img, rescue, stem, overwrite=False)
    except (OutputError, OSError) as exc:
        raise OutputError(f"{problem}; the fallback folder failed too ({_reason(exc)}): "
                          f"{len(rest)} image(s) not saved") from None
    raise OutputError(f"{problem}; saved the remaining {len(rest)} image(s) in '{rescue}' instead")


def _save_png(image: Image.Image, folder: Path, stem: str, overwrite: bool) -> Path:
    path = save_new(folder, stem, ".png", lambda tmp: image.save(tmp, format="PNG"), overwrite)
    print(path)
    return path


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def lora_argument(text: str) -> tuple[str, float]:
    """``FILE[:STRENGTH]`` -> (file, strength); strength 1.0 when the text after the last ``:`` is no number
    (so ``C:\\loras\\x.safetensors`` stays a path)."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0


def _generate(args: argparse.Namespace) -> int:
    from .adapters import load_lora
    from .adapters.merge import check_strength
    from .pipeline import load_pipeline
    from .settings.devices import resolve_device
    from .settings.validate import check_generate
    from .tiny import make_tiny
    from .upscaler import load_upscaler, upscale_images

    check_generate(  # every argument, before any model loads
        prompt=args.prompt, negative_prompt=args.negative, device=args.device, width=args.width, height=args.height,
        steps=args.steps, guidance_scale=args.cfg, guidance_rescale=args.guidance_rescale, sampler=args.sampler,
        seed=args.seed, batch_size=args.batch, beta_end=args.beta_end,
    )
    # The rest that can fail is checked before the DiT loads too, so a long run never ends with nothing saved:
    # the output folder, the --upscale model and the --lora files (small: loading them is the full check).
    check_writable_dir(args.out)
    device = resolve_device(args.device)  # once, for the DiT and the upscaler alike
    upscaler = load_upscaler(args.upscale, device=device) if args.upscale else None
    strengths = [check_strength(path, strength) for path, strength in args.lora]
    loras = [(load_lora(path), strength) for (path, _), strength in zip(args.lora, strengths)]
    model = args.model
    tmp = None
    if model == "tiny":
        tmp = tempfile.TemporaryDirectory(prefix="hunyuan-tiny-")
        model = make_tiny(Path(tmp.name), layout="official")
        print("note: --model tiny is a random 4 MB model built on the fly; it draws noise, not pictures", file=sys.stderr)
    try:
        pipe = load_pipeline(model, device=device, dtype=args.dtype, variant=args.variant,
                             bert_vocab=args.bert_vocab, beta_end=args.beta_end)
        pipe.set_loras(loras)
        out = pipe(args.prompt, negative_prompt=args.negative, width=args.width, height=args.height, steps=args.steps,
                   guidance_scale=args.cfg, seed=args.seed, sampler=args.sampler, batch_size=args.batch,
                   guidance_rescale=args.guidance_rescale, progress=ProgressBar("sampling"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    images = out.images
    if upscaler is not None:
        images = upscale_images(images, upscaler, progress=ProgressBar("upscaling"))
    save_images(images, [f"hunyuan_{seed}_{i:02d}" for i, seed in enumerate(out.seeds)], args.out, args.overwrite)
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from .tiny import make_tiny

    print(make_tiny(args.dir, layout=args.layout, version=args.version, seed=args.seed, overwrite=args.overwrite))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .outputs import check_not_input

    # The source is memory-mapped while it is read: writing into it would crash and truncate the user's weights.
    check_not_input(args.out, [args.model, args.bert_vocab])
    from .formats.convert import check_destination, save_pipeline
    from .pipeline import load_pipeline

    check_destination(args.out, args.layout, overwrite=args.overwrite)
    pipe = load_pipeline(args.model, device="cpu", dtype=args.dtype, variant=args.variant, bert_vocab=args.bert_vocab)
    print(save_pipeline(pipe, args.out, args.layout, overwrite=args.overwrite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .sampling.schedulers import SAMPLERS
    from .settings.devices import DTYPES

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
    g.add_argument("--dtype", default=None, choices=list(DTYPES))
    g.add_argument("--upscale", default=None, help="super-resolution model to apply to each image")
    g.add_argument("--lora", action="append", default=[], type=lora_argument, metavar="FILE[:STRENGTH]",
                   help="a Hunyuan-DiT LoRA (file or PEFT folder) at a strength (default 1.0); repeatable")
    g.add_argument("--out", type=Path, default=Path("outputs"))
    g.add_argument("--overwrite", action="store_true", help="replace existing files instead of numbering new ones")
    g.set_defaults(func=_generate)

    t = sub.add_parser("make-tiny", help="write a tiny random model in a real file layout (for tests and install checks)")
    t.add_argument("dir", type=Path)
    t.add_argument("--layout", default="official", choices=["official", "diffusers", "comfy"])
    t.add_argument("--version", default="1.2", choices=["1.2", "1.1"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true", help="replace a model already in DIR")
    t.set_defaults(func=_make_tiny)

    c = sub.add_parser("convert", help="rewrite a model in another file layout (official, diffusers, comfy)")
    c.add_argument("--model", required=True, help="official ckpts folder, diffusers folder or all-in-one .safetensors")
    c.add_argument("--layout", required=True, choices=["official", "diffusers", "comfy"])
    c.add_argument("--out", type=Path, required=True, help="folder (or .safetensors path for comfy)")
    c.add_argument("--dtype", default="fp16", choices=[n for n, d in DTYPES.items() if d is not None], help="stored precision (default fp16)")
    c.add_argument("--variant", default=None, help="official weights: ema, module, distill or merge")
    c.add_argument("--bert-vocab", default=None, help="BERT vocab.txt for an all-in-one file")
    c.add_argument("--overwrite", action="store_true", help="replace files already at --out")
    c.set_defaults(func=_convert)

    from .batch.cli import add_parser as add_render
    from .rewriter.cli import add_parser as add_chat
    from .upscaler.cli import add_parser as add_upscale

    add_upscale(sub)
    add_chat(sub)
    add_render(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; a problem the user can fix prints one line and exits 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HunyuanError as exc:
        print(f"hunyuan-dit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None or exc.errno not in USER_PATH_ERRNOS:
            raise
        where = f"'{exc.filename}'" + (f" -> '{exc.filename2}'" if exc.filename2 else "")
        print(f"hunyuan-dit: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hunyuan-dit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
