"""``hunyuan-dit`` command line: generate images, write tiny test models, and the features' own subcommands."""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import HunyuanError, InputError, OutputError
from .metadata import ControlUse, GenerationParams, format_params, png_info, read_params
from .outputs import check_writable_dir, save_new
from .pipeline import DEFAULT_STRENGTH

if TYPE_CHECKING:
    from PIL import Image

# File-system refusals that name a user's path (unreadable file, read-only or missing folder, full disk, ...):
# the user can act on them, so main() prints one line. Any other OSError is a bug and keeps its traceback.
USER_PATH_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST", "ENOSPC", "EDQUOT", "ENAMETOOLONG",
    "ELOOP", "ETXTBSY") if hasattr(errno, name))


def save_images(images: Sequence[Image.Image], stems: Sequence[str], out: Path, overwrite: bool = False,
                params: Sequence[GenerationParams] | None = None) -> list[Path]:
    """Save each image as ``out/<stem>.png`` (with its :class:`GenerationParams` in the PNG when given) and print
    its path; an existing file is never replaced unless ``overwrite`` (the name gets ComfyUI's ``_00001_`` counter
    instead).

    If ``out`` fails part-way (disk full, folder removed or replaced), the images not yet saved go to a new
    folder in the system temp dir and :class:`OutputError` says where, so finished work is never dropped.
    """
    items = list(zip(images, stems, params or [None] * len(images)))
    saved: list[Path] = []
    try:
        for img, stem, info in items:
            saved.append(_save_png(img, out, stem, overwrite, info))
        return saved
    except (OutputError, OSError) as exc:
        problem = f"could not save into '{out}': {_reason(exc)}"
    rest = items[len(saved):]
    try:
        rescue = Path(tempfile.mkdtemp(prefix="hunyuan-rescued-"))
        for img, stem, info in rest:
            _save_png(img, rescue, stem, False, info)
    except (OutputError, OSError) as exc:
        raise OutputError(f"{problem}; the fallback folder failed too ({_reason(exc)}): "
                          f"{len(rest)} image(s) not saved") from None
    raise OutputError(f"{problem}; saved the remaining {len(rest)} image(s) in '{rescue}' instead")


def _save_png(image: Image.Image, folder: Path, stem: str, overwrite: bool, params: GenerationParams | None) -> Path:
    pnginfo = png_info(params) if params is not None else None
    path = save_new(folder, stem, ".png", lambda tmp: image.save(tmp, format="PNG", pnginfo=pnginfo), overwrite)
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


def controls_from_args(args: argparse.Namespace, device, dtype) -> list:
    """The ``--controlnet`` / ``--control-image`` / ``--control-strength`` triples, paired in order: every
    ControlNet loaded (each file once) and every hint opened, so a bad file fails before the DiT loads."""
    from .controlnet import Control, check_control, load_controlnet
    from .errors import InputError
    from .images import open_image

    nets, images, strengths = args.controlnet, args.control_image, args.control_strength
    if len(images) != len(nets) or len(strengths) not in (0, len(nets)):
        raise InputError(f"give one --control-image per --controlnet (and no --control-strength or one per "
                         f"--controlnet); got {len(nets)} --controlnet, {len(images)} --control-image, "
                         f"{len(strengths)} --control-strength")
    loaded = {path: load_controlnet(path, device=device, dtype=dtype) for path in dict.fromkeys(nets)}
    controls = [Control(loaded[path], open_image(image), strength)
                for path, image, strength in zip(nets, images, strengths or [1.0] * len(nets))]
    for control in controls:
        check_control(control)
    return controls


# Per-model defaults of --width/--height/--steps: the tiny model only checks an install, in seconds.
MODEL_DEFAULTS = {"tiny": (256, 256, 4)}
REAL_DEFAULTS = (1024, 1024, 50)
# generate's options that set a GenerationParams field of the same meaning: option -> field
OPTION_FIELDS = {
    "model": "model", "prompt": "prompt", "negative": "negative_prompt", "width": "width", "height": "height",
    "steps": "steps", "cfg": "guidance_scale", "guidance_rescale": "guidance_rescale", "seed": "seed",
    "sampler": "sampler", "variant": "variant", "beta_end": "beta_end", "bert_vocab": "bert_vocab", "dtype": "dtype",
    "upscale": "upscale", "image": "image", "strength": "strength", "mask": "mask", "batch": "batch_size",
    "schedule": "schedule", "bert_length": "bert_length", "weight_dtype": "weight_dtype",
}


def size_and_steps(model: str) -> tuple[int, int, int]:
    """Default width, height and steps for a ``--model`` (tiny: seconds, to check an install; else the official)."""
    return MODEL_DEFAULTS.get(model, REAL_DEFAULTS)


def _request(args: argparse.Namespace) -> GenerationParams:
    """The run's settings: those of ``--from-png`` (when given), then every option given on the command line,
    then the defaults (per model for the size and steps; an ``--image``'s own size, to a multiple of 16)."""
    from .diffusers_style import image_size
    from .images import open_image
    from .metadata import Resource

    given = {field: getattr(args, option) for option, field in OPTION_FIELDS.items()
             if getattr(args, option) is not None}
    if args.lora:
        given["loras"] = [Resource(path, None, strength) for path, strength in args.lora]
    if args.from_png is not None:
        if "batch_size" in given:
            raise InputError("--batch does not go with --from-png: the picture is redrawn with its own batch")
        params = replace(read_params(args.from_png), **given)  # its model_hash: what the model should hash to
    else:
        for option in ("model", "prompt"):
            if option not in given:
                raise InputError(f"generate needs --{option} (or --from-png IMG to redraw a picture)")
        params = GenerationParams(**given)
    if params.image is None and (params.mask is not None or params.strength is not None):
        raise InputError("--mask and --strength need --image (the picture to change)")
    if params.image is not None and params.strength is None:
        params.strength = DEFAULT_STRENGTH
    width, height, steps = size_and_steps(params.model)
    if params.image is not None and ("width" not in given or "height" not in given) and args.from_png is None:
        with warnings.catch_warnings(record=True) as rounded:
            warnings.simplefilter("always")
            width, height = image_size(open_image(params.image), given.get("width"), given.get("height"))
        for warning in rounded:
            print(f"note: {warning.message}", file=sys.stderr)
    if args.from_png is None:
        params.width, params.height = given.get("width", width), given.get("height", height)
        params.steps = given.get("steps", steps)
    return params


def _generate(args: argparse.Namespace) -> int:
    from .adapters import load_lora
    from .adapters.ip_adapter_cli import image_prompt_from_args
    from .adapters.merge import check_strength
    from .formats.hashes import model_hash, weights_hash
    from .images import open_image
    from .pipeline import load_pipeline
    from .progress import TqdmProgress
    from .settings.devices import resolve_device
    from .settings.validate import check_generate
    from .tiny import make_tiny
    from .upscaler import load_upscaler, upscale_images

    p = _request(args)
    check_generate(  # every argument, before any model loads
        prompt=p.prompt, negative_prompt=p.negative_prompt, device=args.device, width=p.width, height=p.height,
        steps=p.steps, guidance_scale=p.guidance_scale, guidance_rescale=p.guidance_rescale, sampler=p.sampler,
        schedule=p.schedule, seed=p.seed - p.batch_index, batch_size=p.batch_size, beta_end=p.beta_end,
        strength=p.strength if p.image else 1.0,
    )
    # The rest that can fail is checked before the DiT loads too, so a long run never ends with nothing saved:
    # the output folder, the images, the --upscale model, the --lora and --controlnet files (small: loading them is
    # the check) and the image prompt (the reference images encoded, the image encoder released again).
    check_writable_dir(args.out)
    image = open_image(p.image).convert("RGB") if p.image else None
    mask = open_image(p.mask).convert("L") if p.mask else None
    device = resolve_device(args.device)  # once, for the DiT and the upscaler alike
    upscaler = load_upscaler(p.upscale, device=device) if p.upscale else None
    strengths = [check_strength(r.name, r.strength) for r in p.loras]
    loras = [(load_lora(r.name), strength) for r, strength in zip(p.loras, strengths)]
    p.loras = [r._replace(hash=weights_hash(r.name)) for r in p.loras]
    controls = controls_from_args(args, device, p.dtype)
    p.controlnets = [ControlUse(path, weights_hash(path), c.strength, c.start, c.end, hint)
                     for path, hint, c in zip(args.controlnet, args.control_image, controls)]
    ip_adapter, image_prompt = image_prompt_from_args(args, device)
    expected_hash, p.model_hash = p.model_hash, None
    with tempfile.TemporaryDirectory(prefix="hunyuan-tiny-") as tmp:  # tiny weights may be memory-mapped from it
        model = p.model
        if model == "tiny":
            model = make_tiny(Path(tmp), layout="official")
            print("note: --model tiny is a random 4 MB model built on the fly; it draws noise, not pictures",
                  file=sys.stderr)
        p.model_hash = None if p.model == "tiny" else model_hash(model, p.variant)  # tiny: rebuilt, not a file
        if expected_hash and expected_hash != p.model_hash:
            print(f"warning: the model's hash is {p.model_hash}, the picture was drawn with {expected_hash}: "
                  "the pixels will differ", file=sys.stderr)
        pipe = load_pipeline(model, device=device, dtype=p.dtype, variant=p.variant, bert_vocab=p.bert_vocab,
                             beta_end=p.beta_end, offload=args.offload, weight_dtype=p.weight_dtype,
                             bert_length=p.bert_length)
        pipe.set_loras(loras)
        out = pipe(**p.pipeline_kwargs(), image=image, mask=mask, controlnets=controls, ip_adapter=ip_adapter,
                   image_prompt=image_prompt)
    # --from-png keeps its one picture of the batch; a new run keeps them all
    keep = [p.batch_index] if args.from_png is not None else range(len(out.images))
    images = [out.images[i] for i in keep]
    if upscaler is not None:
        bar = TqdmProgress(desc="upscaling", unit="tile")
        try:
            images = upscale_images(images, upscaler, progress=bar)
        finally:
            bar.close()
    save_images(images, [f"hunyuan_{out.seeds[i]}_{i:02d}" for i in keep], args.out, args.overwrite,
                [replace(p, seed=out.seeds[i], batch_index=i) for i in keep])
    return 0


def _info(args: argparse.Namespace) -> int:
    from .rewriter.sanitize import terminal_text

    print(terminal_text(format_params(read_params(args.image))))  # the text comes from a file: no escapes
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from .tiny import make_tiny

    path = make_tiny(args.dir, layout=args.layout, version=args.release, seed=args.seed, overwrite=args.overwrite)
    print(path)
    if args.layout == "comfy":
        _say_bert_folder(path)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .outputs import check_not_input

    # The source is memory-mapped while it is read: writing into it would crash and truncate the user's weights.
    check_not_input(args.out, [args.model, args.bert_vocab])
    from .formats.convert import check_destination, save_pipeline
    from .pipeline import load_pipeline

    check_destination(args.out, args.layout, overwrite=args.overwrite)
    pipe = load_pipeline(args.model, device="cpu", dtype=args.dtype, variant=args.variant, bert_vocab=args.bert_vocab)
    path = save_pipeline(pipe, args.out, args.layout, overwrite=args.overwrite)
    print(path)
    if args.layout == "comfy":
        _say_bert_folder(path)
    return 0


def _say_bert_folder(model: Path) -> None:
    from .formats.all_in_one import bert_vocab_beside

    print(f"note: also wrote '{bert_vocab_beside(model).parent}/', the BERT vocabulary the all-in-one file lacks; "
          "keep it beside the file (hunyuan-dit finds it there; in ComfyUI the node pack uses ComfyUI's own)",
          file=sys.stderr)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (None, an off flag, no list)
    or the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command of ``hunyuan-dit`` formats its help the same way."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from .adapters.ip_adapter_cli import add_generate_arguments as add_ip_adapter_arguments
    from .model.fp8 import WEIGHT_DTYPES
    from .sampling.schedulers import SAMPLERS, SCHEDULES
    from .settings.devices import DTYPES

    parser = _Parser(prog="hunyuan-dit", description="Tencent Hunyuan-DiT text-to-image.")
    parser.add_argument("--version", action="version", version=f"hunyuan-dit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    real_w, real_h, real_steps = REAL_DEFAULTS
    defaults = {f.name: f.default for f in fields(GenerationParams)}
    tiny_w, tiny_h, tiny_steps = MODEL_DEFAULTS["tiny"]

    g = sub.add_parser("generate", help="draw images from a prompt (or redraw a PNG it made: --from-png)",
                       description="Draw images; each PNG carries its settings (read them with 'hunyuan-dit info').")
    g.add_argument("--model", help="official ckpts folder, diffusers folder, all-in-one .safetensors, or 'tiny' "
                                   "(a random model built on the fly, to check an install)")
    g.add_argument("--prompt", help="what to draw (Chinese or English)")
    g.add_argument("--negative", help="what to avoid (default: the official negative prompt)")
    g.add_argument("--from-png", type=Path, metavar="IMG",
                   help="redraw a PNG made by hunyuan-dit with its settings (same pixels on the same device); "
                        "options given as well replace the PNG's")
    g.add_argument("--width", type=int, help=f"multiple of 16 (official sizes: 1024x1024, 1280x768, ...); default: "
                                             f"{real_w}, {tiny_w} for --model tiny, the --image's size with --image")
    g.add_argument("--height", type=int, help=f"multiple of 16; default: {real_h}, {tiny_h} for --model tiny, "
                                              "the --image's size with --image")
    g.add_argument("--steps", type=int, help=f"sampling steps (default: {real_steps}, {tiny_steps} for --model tiny)")
    g.add_argument("--cfg", type=float, help=f"guidance scale (default: {defaults['guidance_scale']})")
    g.add_argument("--guidance-rescale", type=float, help="rescale guided noise toward the conditional one, 0..1 "
                                                          f"(default: {defaults['guidance_rescale']})")
    g.add_argument("--seed", type=int, help=f"image i of a batch uses seed + i (default: {defaults['seed']})")
    g.add_argument("--sampler", choices=SAMPLERS, help=f"default: {defaults['sampler']}")
    g.add_argument("--batch", type=int, help="pictures per run (default: 1)")
    g.add_argument("--image", help="start from this picture (img2img; with --mask, inpainting)")
    g.add_argument("--strength", type=float,
                   help=f"how much of --image is redrawn, 0 (nothing) to 1 (all) (default: {DEFAULT_STRENGTH})")
    g.add_argument("--mask", help="inpainting mask for --image: white = repaint, black = keep")
    g.add_argument("--variant", help="official weights: ema, module, distill or merge (default: ema, or the only one)")
    g.add_argument("--beta-end", type=float,
                   help="override the release's schedule end (0.02 = official v1.2 inference; default: the release's)")
    g.add_argument("--bert-vocab", help="BERT vocab.txt or tokenizer folder for an all-in-one file (default: the "
                                        "hydit_clip_tokenizer/ folder beside the file)")
    g.add_argument("--device", help="cuda, cpu, mps, cuda:1, ... (default: the GPU if there is one)")
    g.add_argument("--dtype", choices=list(DTYPES), help="weights' precision (default: fp16 on GPUs, fp32 on the CPU)")
    g.add_argument("--upscale", help="super-resolution model to apply to each image")
    g.add_argument("--lora", action="append", default=[], type=lora_argument, metavar="FILE[:STRENGTH]",
                   help="a Hunyuan-DiT LoRA (file or PEFT folder) at a strength (default 1.0); repeatable")
    g.add_argument("--schedule", choices=list(SCHEDULES),
                   help=f"where the steps fall (KSampler's scheduler; default: {defaults['schedule']}, the sampler's own)")
    g.add_argument("--bert-length", type=int,
                   help=f"tokens BERT reads: {defaults['bert_length']} (official, default) up to 512 for long prompts, "
                        "beyond the training length")
    g.add_argument("--offload", choices=["model", "blocks"],
                   help="less GPU memory, same images: components ('model') or DiT/mT5 blocks ('blocks') visit the GPU "
                        "in turn (default: everything stays on the GPU)")
    g.add_argument("--weight-dtype", choices=list(WEIGHT_DTYPES),
                   help="store the DiT's and mT5's block weights in fp8 (half their memory; approximate)")
    g.add_argument("--controlnet", action="append", default=[], metavar="FILE",
                   help="a Hunyuan-DiT ControlNet (official .pt/.safetensors or diffusers); repeatable, paired in order "
                        "with --control-image (and --control-strength)")
    g.add_argument("--control-image", action="append", default=[], metavar="IMG",
                   help="the hint image of the matching --controlnet (edges, depth, pose, ...)")
    g.add_argument("--control-strength", action="append", default=[], type=float, metavar="S",
                   help="strength of the matching --controlnet (default 1.0)")
    add_ip_adapter_arguments(g)
    g.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the pictures")
    g.add_argument("--overwrite", action="store_true", help="replace existing files instead of numbering new ones")
    g.set_defaults(func=_generate)

    i = sub.add_parser("info", help="print the settings a hunyuan-dit PNG was drawn with")
    i.add_argument("image", type=Path, metavar="IMG", help="a PNG saved by hunyuan-dit")
    i.set_defaults(func=_info)

    t = sub.add_parser("make-tiny", help="write a tiny random model in a real file layout (for tests and install checks)")
    t.add_argument("dir", type=Path, help="folder to write the model into")
    t.add_argument("--layout", default="official", choices=["official", "diffusers", "comfy"],
                   help="file layout (comfy: an all-in-one .safetensors + hydit_clip_tokenizer/ beside it)")
    t.add_argument("--release", default="1.2", choices=["1.2", "1.1"],
                   help="model release to imitate (1.1 adds size and style conditioning)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random weights (the same in every layout)")
    t.add_argument("--overwrite", action="store_true", help="replace a model already in DIR")
    t.set_defaults(func=_make_tiny)

    c = sub.add_parser("convert", help="rewrite a model in another file layout (official, diffusers, comfy)")
    c.add_argument("--model", required=True, help="official ckpts folder, diffusers folder or all-in-one .safetensors")
    c.add_argument("--layout", required=True, choices=["official", "diffusers", "comfy"], help="layout to write")
    c.add_argument("--out", type=Path, required=True, help="folder (or .safetensors path for comfy)")
    c.add_argument("--dtype", default="fp16", choices=[n for n, d in DTYPES.items() if d is not None],
                   help="stored precision")
    c.add_argument("--variant", help="official weights: ema, module, distill or merge (default: ema, or the only one)")
    c.add_argument("--bert-vocab", help="BERT vocab.txt or tokenizer folder for an all-in-one file (default: the "
                                        "hydit_clip_tokenizer/ folder beside the file)")
    c.add_argument("--overwrite", action="store_true", help="replace files already at --out")
    c.set_defaults(func=_convert)

    from .adapters.ip_adapter_cli import add_parser as add_convert_image_encoder
    from .batch.cli import add_parser as add_render
    from .rewriter.cli import add_parser as add_chat
    from .upscaler.cli import add_parser as add_upscale

    add_upscale(sub)
    add_chat(sub)
    add_convert_image_encoder(sub)
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
