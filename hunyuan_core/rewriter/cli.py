"""``hunyuan-dit chat``: draw in a conversation from a terminal, as the official multi-turn demo does.

Each request is rewritten by the rewriter with the conversation so far, then drawn with the turn's seed
(the session's seed unless told otherwise) and saved; "变成玻璃的" edits the previous picture's
description. The session is saved after every turn, so the same ``--session`` continues later.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..errors import HunyuanError, InputError
from .instructions import Instruction, InstructionStore
from .limits import tokenizer_counter
from .rewriter import Rewriter
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
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--steps", type=int, default=50)
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
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a rewriter server")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "fp16", "bf16", "fp32"])
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Load the drawing pipeline and the rewriter, then chat on stdin/stdout."""
    from ..pipeline import load_pipeline
    from ..tiny import make_tiny
    from .loader import load_rewriter
    from .tiny import make_tiny_dialoggen

    with tempfile.TemporaryDirectory(prefix="hunyuan-chat-") as tmp:
        model, rewriter_path = args.model, args.rewriter
        if model == "tiny":
            model = make_tiny(Path(tmp) / "dit", layout="official")
        if rewriter_path == "tiny":
            rewriter_path = make_tiny_dialoggen(Path(tmp) / "dialoggen")
        if "tiny" in (args.model, args.rewriter):
            print("note: 'tiny' models are random and built on the fly: they check an install, they do not draw",
                  file=sys.stderr)
        pipe = load_pipeline(model, device=args.device, dtype=args.dtype)
        rewriter = load_rewriter(
            rewriter_path, device=args.device, dtype=args.dtype, model=args.rewriter_model, quantize=args.quantize,
            keep_loaded=args.keep_loaded, timeout=args.timeout, temperature=args.temperature, seed=args.llm_seed,
            count_tokens=tokenizer_counter(pipe.text_encoder.mt5_tokenizer),
        )
        return chat(pipe, rewriter, args, sys.stdin, sys.stdout)  # tiny weights may be memory-mapped from tmp


def _open_session(store: SessionStore, args: argparse.Namespace, out: TextIO) -> Session:
    session = store.load(args.session, seed=args.seed)
    if session.turns:
        print(f"continuing session '{session.name}' ({len(session.turns)} turns, seed {session.seed})", file=out)
    if args.new_seed_each_turn:
        session.reuse_seed = False
    if args.img2img is not None:
        session.img2img_strength = args.img2img or None
    session.validate()
    return session


def chat(pipe: Callable, rewriter: Rewriter, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """The conversation loop; ``pipe`` is a Hunyuan-DiT pipeline (any callable with its signature)."""
    store = SessionStore(args.session_dir)
    instructions = InstructionStore()
    session = _open_session(store, args, out)
    instruction: Instruction | None = instructions.get(args.instruction) if args.instruction else None
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"rewriter: {rewriter.name}\n{HELP}", file=out)
    while True:
        print("> ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, argument = line.partition(" ")
            if command in ("/quit", "/exit"):
                break
            instruction = _command(command, argument.strip(), session, instructions, instruction, out)
            store.save(session)
            continue
        try:
            _turn(pipe, rewriter, session, line, instruction, args, out, store.file_stem(session.name))
        except HunyuanError as exc:  # a server that went away, a request too long: say so and go on
            print(f"error: {exc}", file=out)
        store.save(session)
    rewriter.unload()
    return 0


def _command(command: str, argument: str, session: Session, instructions: InstructionStore,
             instruction: Instruction | None, out: TextIO) -> Instruction | None:
    """Run a slash command; returns the instruction in force afterwards."""
    if command == "/undo":
        dropped = session.undo()
        print(f"dropped: {dropped.request}" if dropped else "nothing to undo", file=out)
    elif command == "/reset":
        session.reset()
        print(f"conversation cleared (seed {session.seed})", file=out)
    elif command == "/history":
        for i, turn in enumerate(session.turns, 1):
            shown = "(refused)" if turn.refused else turn.prompt
            print(f"{i}. {turn.request}\n   → {shown}" + (f"\n   [{turn.image}]" if turn.image else ""), file=out)
    elif command == "/seed" and argument.isdigit():
        session.seed = int(argument)
        session.validate()
        print(f"seed {session.seed} from the next turn", file=out)
    elif command == "/instructions":
        for item in instructions.list():
            print(f"{item.name}: {item.template} ({item.position} rewriting)", file=out)
    elif command == "/use":
        if argument.lower() in ("", "none"):
            return None
        try:
            return instructions.get(argument)
        except InputError as exc:
            print(exc, file=out)
    else:
        print(HELP, file=out)
    return instruction


def _turn(pipe: Callable, rewriter: Rewriter, session: Session, text: str, instruction: Instruction | None,
          args: argparse.Namespace, out: TextIO, stem: str) -> None:
    """Rewrite one request and, when it is a drawing request, draw and save the picture."""
    from PIL import Image

    result = rewriter.rewrite(text, session, instruction)
    if result.refused:
        print(f"rewriter refused: {result.reply}", file=out)
        return
    if not result.draw:
        print(result.reply, file=out)
        return
    print(f"prompt: {result.prompt}", file=out)
    if result.truncated:
        print(f"(cut to fit the text encoder: {result.truncated})", file=out)
    init = Image.open(result.init_image).convert("RGB") if result.init_image else None
    try:
        image = pipe(result.prompt, width=args.width, height=args.height, steps=args.steps, guidance_scale=args.cfg,
                     seed=result.seed, image=init, strength=result.strength or 1.0).images[0]
    except BaseException:
        session.undo()  # no picture, no turn: the conversation stays what was drawn
        raise
    path = args.out / f"{stem}_{len(session.turns):02d}_{result.seed}.png"
    image.save(path)
    session.turns[-1].image = str(path.resolve())
    print(f"saved {path}", file=out)
