"""``hunyuan-dit chat``: draw in a conversation from a terminal, as the official multi-turn demo does.

Each request is rewritten by the rewriter with the conversation so far, then drawn with the turn's seed
(the session's seed unless told otherwise) and saved; "变成玻璃的" edits the previous picture's
description. The session is saved after every turn, so the same ``--session`` continues later.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..errors import HunyuanError, InputError
from ..images import open_image
from ..metadata import GenerationParams, png_info
from ..outputs import check_writable_dir, save_new
from ..settings.devices import DTYPES
from ..settings.limits import MAX_SEED
from .instructions import Instruction, InstructionStore
from .limits import tokenizer_counter
from .rewriter import Rewriter
from .sanitize import terminal_text
from .session import Session, SessionStore

HELP = """commands: /undo (drop the last turn)  /reset (start over)  /history  /seed N
          /instructions  /use NAME (apply a saved instruction; /use none to stop)  /quit"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``chat`` subcommand."""
    p = subparsers.add_parser("chat", help="multi-turn drawing: a rewriter LLM turns your requests into prompts")
    p.add_argument("--model", required=True,
                   help="Hunyuan-DiT: official ckpts folder, diffusers folder, all-in-one file, or 'tiny'")
    p.add_argument("--rewriter", required=True,
                   help="DialogGen folder (ckpts/dialoggen or ckpts), a Hugging Face chat LLM folder, an http:// "
                        "OpenAI-compatible server (llama.cpp, Ollama, vLLM), or 'tiny'")
    p.add_argument("--rewriter-model", default=None, help="model name on the server (default: the first it lists)")
    p.add_argument("--session", default="chat", help="conversation name; an existing one continues")
    p.add_argument("--session-dir", type=Path, default=None,
                   help="where sessions are kept (default: the user's config folder)")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the pictures")
    p.add_argument("--width", type=int, help="picture width, a multiple of 16 (default: 1024, 256 for --model tiny)")
    p.add_argument("--height", type=int, help="picture height, a multiple of 16 (default: 1024, 256 for --model tiny)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 50, 4 for --model tiny)")
    p.add_argument("--cfg", type=float, default=6.0, help="guidance scale")
    p.add_argument("--seed", type=int, default=None, help="drawing seed of a new session (default: random)")
    p.add_argument("--new-seed-each-turn", action="store_true", help="draw turn i with seed + i instead of one seed")
    p.add_argument("--img2img", type=float, default=None, metavar="STRENGTH",
                   help="start each picture from the previous one at this strength (0-1; 1 ignores it)")
    p.add_argument("--instruction", default=None, help="saved instruction to apply to every request")
    p.add_argument("--temperature", type=float, default=None, help="rewriter sampling temperature (0 = greedy)")
    p.add_argument("--llm-seed", type=int, default=None, help="seed for the rewriter's sampling (repeatable answers)")
    p.add_argument("--quantize", default=None, choices=["4bit", "8bit"], help="load a local LLM with bitsandbytes")
    p.add_argument("--keep-loaded", action="store_true", help="keep the LLM on the GPU between turns")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a rewriter server may take per request")
    p.add_argument("--allow-insecure-http", action="store_true",
                   help="send the API key ($HUNYUAN_REWRITER_API_KEY) over plain http:// to another machine "
                        "(only on a network you trust; https:// and this machine's servers need no flag)")
    p.add_argument("--device", default=None, help="cuda, cpu, mps, cuda:1, ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, choices=list(DTYPES),
                   help="weights' precision (default: fp16 on GPUs, fp32 on the CPU)")
    p.set_defaults(func=run, model_hash=None)  # run() hashes the model once, for the pictures' metadata
    return p


def run(args: argparse.Namespace) -> int:
    """Load the drawing pipeline and the rewriter, then chat on stdin/stdout."""
    from ..cli import size_and_steps
    from ..formats.hashes import model_hash
    from ..pipeline import load_pipeline
    from ..tiny import make_tiny
    from .loader import load_rewriter
    from .tiny import make_tiny_dialoggen

    check_writable_dir(args.out)  # before any model loads: a long session must be able to save its pictures
    with tempfile.TemporaryDirectory(prefix="hunyuan-chat-") as tmp:
        model, rewriter_path = args.model, args.rewriter
        if model == "tiny":
            model = make_tiny(Path(tmp) / "dit", layout="official")
        if rewriter_path == "tiny":
            rewriter_path = make_tiny_dialoggen(Path(tmp) / "dialoggen")
        if "tiny" in (args.model, args.rewriter):
            print("note: 'tiny' models are random and built on the fly: they check an install, they do not draw",
                  file=sys.stderr)
        width, height, steps = size_and_steps(args.model)
        args.width, args.height = args.width or width, args.height or height
        args.steps = args.steps if args.steps is not None else steps
        pipe = load_pipeline(model, device=args.device, dtype=args.dtype)
        rewriter = load_rewriter(
            rewriter_path, device=args.device, dtype=args.dtype, model=args.rewriter_model, quantize=args.quantize,
            keep_loaded=args.keep_loaded, timeout=args.timeout, temperature=args.temperature, seed=args.llm_seed,
            allow_insecure_http=args.allow_insecure_http,
            count_tokens=tokenizer_counter(pipe.text_encoder.mt5_tokenizer),
        )
        args.model_hash = None if args.model == "tiny" else model_hash(model)  # tiny: rebuilt, not a file
        return chat(pipe, rewriter, args, sys.stdin, sys.stdout)  # tiny weights may be memory-mapped from tmp


def _say(out: TextIO, text: str, end: str = "\n") -> None:
    """Show ``text``: whatever the chat prints may hold a model's or a server's words, so terminal controls
    (escape sequences, carriage returns, bidi overrides) are removed first."""
    print(terminal_text(text), end=end, file=out, flush=True)


def _open_session(store: SessionStore, args: argparse.Namespace, out: TextIO) -> Session:
    session = store.load(args.session, seed=args.seed)
    if session.turns:
        _say(out, f"continuing session '{session.name}' ({len(session.turns)} turns, seed {session.seed})")
    if args.new_seed_each_turn:
        session.reuse_seed = False
    if args.img2img is not None:
        session.img2img_strength = args.img2img or None
    session.validate()
    return session


def chat(pipe: Callable, rewriter: Rewriter, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """The conversation loop; ``pipe`` is a Hunyuan-DiT pipeline (any callable with its signature).

    A mistake in a line (a bad command argument, a server that went away, a request too long) is reported
    and the loop goes on; it ends at ``/quit`` or the end of the input.
    """
    store = SessionStore(args.session_dir)
    instructions = InstructionStore()
    session = _open_session(store, args, out)
    instruction: Instruction | None = instructions.get(args.instruction) if args.instruction else None
    check_writable_dir(args.out)
    if hasattr(stdin, "reconfigure"):  # a terminal in another encoding: show the odd byte, do not stop
        stdin.reconfigure(errors="replace")
    _say(out, f"rewriter: {rewriter.name}\n{HELP}")
    while True:
        _say(out, "> ", end="")
        line = stdin.readline()
        if not line:
            break
        line = terminal_text(line).strip()  # arrow keys without line editing arrive as escape sequences
        if not line:
            continue
        command, _, argument = line.partition(" ") if line.startswith("/") else ("", "", "")
        if command in ("/quit", "/exit"):
            break
        try:
            if command:
                instruction = _command(command, argument.strip(), session, instructions, instruction, out)
            else:
                _turn(pipe, rewriter, session, line, instruction, args, out, store.file_stem(session.name))
        except HunyuanError as exc:
            _say(out, f"error: {exc}")
        try:
            store.save(session)
        except HunyuanError as exc:
            _say(out, f"error: the session could not be saved: {exc}")
    rewriter.unload()
    return 0


def _parse_seed(text: str) -> int:
    """A seed typed after ``/seed``: ASCII digits in 0..MAX_SEED (``int`` would also take '²' or '١')."""
    if not re.fullmatch(r"[0-9]{1,20}", text) or int(text) > MAX_SEED:
        raise InputError(f"/seed {text[:24]!r}: expected a whole number from 0 to {MAX_SEED}, such as /seed 42")
    return int(text)


def _command(command: str, argument: str, session: Session, instructions: InstructionStore,
             instruction: Instruction | None, out: TextIO) -> Instruction | None:
    """Run a slash command; returns the instruction in force afterwards."""
    if command == "/undo":
        dropped = session.undo()
        _say(out, f"dropped: {dropped.request}" if dropped else "nothing to undo")
    elif command == "/reset":
        session.reset()
        _say(out, f"conversation cleared (seed {session.seed})")
    elif command == "/history":
        for i, turn in enumerate(session.turns, 1):
            shown = "(refused)" if turn.refused else turn.prompt
            _say(out, f"{i}. {turn.request}\n   → {shown}" + (f"\n   [{turn.image}]" if turn.image else ""))
    elif command == "/seed":
        session.seed = _parse_seed(argument)
        _say(out, f"seed {session.seed} from the next turn")
    elif command == "/instructions":
        for item in instructions.list():
            _say(out, f"{item.name}: {item.template} ({item.position} rewriting)")
    elif command == "/use":
        if argument.lower() in ("", "none"):
            return None
        return instructions.get(argument)
    else:
        _say(out, f"unknown command {command}\n{HELP}")
    return instruction


def _turn(pipe: Callable, rewriter: Rewriter, session: Session, text: str, instruction: Instruction | None,
          args: argparse.Namespace, out: TextIO, stem: str) -> None:
    """Rewrite one request and, when it is a drawing request, draw and save the picture (under a new name:
    an earlier picture, of this conversation or of one before a /reset, is never replaced)."""
    result = rewriter.rewrite(text, session, instruction)
    if result.refused:
        _say(out, f"rewriter refused: {result.reply}")
        return
    if not result.draw:
        _say(out, result.reply)
        return
    _say(out, f"prompt: {result.prompt}")
    if result.truncated:
        _say(out, f"(cut to fit the text encoder: {result.truncated})")
    try:
        init = open_image(result.init_image).convert("RGB") if result.init_image else None
        strength = result.strength or 1.0
        image = pipe(result.prompt, width=args.width, height=args.height, steps=args.steps, guidance_scale=args.cfg,
                     seed=result.seed, image=init, strength=strength).images[0]
        source = {"image": str(result.init_image), "strength": strength} if init is not None else {}
        params = GenerationParams(
            result.prompt, width=args.width, height=args.height, steps=args.steps, guidance_scale=args.cfg,
            seed=result.seed, model=args.model, model_hash=args.model_hash, dtype=args.dtype, **source,
        )
        path = save_new(args.out, f"{stem}_{len(session.turns):02d}_{result.seed}", ".png",
                        lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(params)))
    except BaseException:
        session.undo()  # no picture, no turn: the conversation stays what was drawn
        raise
    session.turns[-1].image = str(path.resolve())
    _say(out, f"saved {path}")
