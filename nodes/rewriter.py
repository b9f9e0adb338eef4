"""Prompt rewriting and multi-turn drawing nodes: DialogGen / a local LLM / an HTTP server turns a short
request into a Hunyuan-DiT prompt, in a conversation that lives on disk under a session name, so that
queueing the workflow again with "变成玻璃的" edits the previous picture.

Sessions and saved instructions are kept in ComfyUI's user folder (``user/hunyuan-dit``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hunyuan_core.errors import InputError
from hunyuan_core.images import open_image
from hunyuan_core.outputs import save_new
from hunyuan_core.rewriter import (
    POSITIONS,
    Instruction,
    InstructionStore,
    SessionStore,
    load_rewriter,
    tokenizer_counter,
    user_dir,
)
from hunyuan_core.rewriter.chat_llm import is_chat_model_folder
from hunyuan_core.rewriter.dialoggen import is_llava_folder
from hunyuan_core.settings.devices import DTYPES
from hunyuan_core.settings.limits import MAX_SEED

from . import host
from ._common import (
    HUNYUAN_FOLDER,
    REWRITER_CATEGORY,
    TEXT_ENCODER,
    TextEncoderHandle,
    io,
    resolve_choice,
)

REWRITER = io.Custom("HYDIT_REWRITER")
INSTRUCTION = io.Custom("HYDIT_INSTRUCTION")
CONVERSATION = io.Custom("HYDIT_CONVERSATION")
LLM_FOLDER = "LLM"  # ComfyUI/models/LLM/<model folder>/, as other LLM node packs use
host.register_model_folder(LLM_FOLDER, "LLM")
SERVER = "OpenAI-compatible server (endpoint below)"
QUANTIZE = ["none", "8bit", "4bit"]
_SEARCH_DEPTH = 3  # models/hunyuan/HunyuanDiT/ckpts/dialoggen
_BLANK = 64  # side of the placeholder image when there is no previous picture


def _user_dir() -> Path:
    """``hunyuan-dit/`` in ComfyUI's user folder; outside ComfyUI the core's default folder."""
    base = host.user_directory()
    return Path(base) / "hunyuan-dit" if base is not None else user_dir()


def _sessions() -> SessionStore:
    return SessionStore(_user_dir() / "sessions")


def _instructions() -> InstructionStore:
    return InstructionStore(_user_dir())


def rewriter_choices() -> list[str]:
    """``LLM/<folder>`` for chat LLMs and DialogGen, ``hunyuan/<...>/dialoggen`` inside official downloads,
    then the server entry."""
    found: set[str] = set()
    for key in (LLM_FOLDER, HUNYUAN_FOLDER):
        for base in map(Path, host.folder_paths_for(key)):
            pending = [(base, 0)]
            while pending:
                folder, depth = pending.pop()
                if not folder.is_dir() or depth > _SEARCH_DEPTH:
                    continue
                if depth and (is_llava_folder(folder) or (key == LLM_FOLDER and is_chat_model_folder(folder))):
                    found.add(f"{key}/{folder.relative_to(base).as_posix()}")
                    continue
                pending += [(p, depth + 1) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found) + [SERVER]


class HunyuanDiTRewriterLoader(io.ComfyNode):
    """Loads the prompt rewriter: DialogGen, a local chat LLM, or an OpenAI-compatible server."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTRewriterLoader",
            display_name="HunyuanDiT Load Rewriter (DialogGen / LLM)",
            category=REWRITER_CATEGORY,
            description="Loads a prompt rewriter for HunyuanDiT: DialogGen, a local chat LLM or an HTTP server.",
            inputs=[
                io.Combo.Input("model", options=rewriter_choices(), tooltip=(
                    "LLM/: DialogGen (the official ckpts/dialoggen folder) or any Hugging Face chat model "
                    "(Qwen, Hunyuan, Llama ... instruct) under models/LLM/. hunyuan/: DialogGen inside an "
                    "official download. Or a server (llama.cpp, Ollama, vLLM) at the endpoint below."
                )),
                io.String.Input("endpoint", default="http://127.0.0.1:8080/v1", tooltip=(
                    "Server address when model is the server entry (e.g. Ollama: http://127.0.0.1:11434/v1)."
                )),
                io.String.Input("server_model", default="", tooltip=(
                    "Model name on the server; empty takes the first one it lists."
                )),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=(
                    "Weight precision of a local model. auto: fp16 on GPUs, bf16 on CPU. Ignored for a server."
                )),
                io.Combo.Input("quantize", options=QUANTIZE, default="none", tooltip=(
                    "Local models: load in 8 or 4 bits (needs the bitsandbytes package and CUDA). DialogGen in "
                    "4 bits takes about 5 GB instead of 15."
                )),
                io.Boolean.Input("keep_on_gpu", default=False, tooltip=(
                    "Keep a local LLM on the GPU between rewrites (faster, but it holds its memory while "
                    "HunyuanDiT draws). Off: it rests on the CPU."
                )),
                io.Float.Input("temperature", default=-1.0, min=-1.0, max=2.0, step=0.05, tooltip=(
                    "Sampling temperature; 0 = greedy (always the same answer); -1 = the model's default "
                    "(DialogGen: the official 0.2)."
                )),
                io.Int.Input("max_new_tokens", default=512, min=16, max=4096, tooltip=(
                    "Longest answer in tokens (official DialogGen: 512)."
                )),
                io.Int.Input("llm_seed", default=-1, min=-1, max=MAX_SEED, tooltip=(
                    "Seed of the LLM's sampling: the same seed gives the same rewrite; -1 = not seeded."
                )),
                io.Float.Input("timeout", default=120.0, min=1.0, max=3600.0, tooltip=(
                    "Seconds the server may take for a whole answer."
                )),
                io.Boolean.Input("allow_insecure_http", default=False, optional=True, tooltip=(
                    "Send the API key (HUNYUAN_REWRITER_API_KEY) to a server on another machine over "
                    "plain http://, where anyone on the network can read it. Off: such a server is refused "
                    "(https:// and servers on this machine need no opt-in)."
                )),
            ],
            outputs=[
                REWRITER.Output(display_name="rewriter", tooltip="The prompt rewriter."),
                io.String.Output(display_name="info", tooltip="Which model and which sampling settings."),
            ],
        )

    @classmethod
    def execute(cls, model: str, endpoint: str, server_model: str, dtype: str, quantize: str, keep_on_gpu: bool,
                temperature: float, max_new_tokens: int, llm_seed: int, timeout: float,
                allow_insecure_http: bool = False) -> io.NodeOutput:
        path = endpoint.strip() if model == SERVER else resolve_choice(model, (LLM_FOLDER, HUNYUAN_FOLDER))
        device = host.torch_device()
        rewriter = load_rewriter(
            path, device=device, dtype=DTYPES[dtype], model=server_model.strip() or None,
            quantize=None if quantize == "none" else quantize, keep_loaded=keep_on_gpu and not host.low_vram(),
            make_room=lambda size: host.free_memory(size, device), timeout=timeout,
            temperature=None if temperature < 0 else temperature, max_new_tokens=max_new_tokens,
            seed=None if llm_seed < 0 else llm_seed, allow_insecure_http=allow_insecure_http,
        )
        options = rewriter.options
        info = (f"{rewriter.name}: temperature {options.temperature:g}, up to {options.max_new_tokens} new tokens"
                + (f", seed {options.seed}" if options.seed is not None else ""))
        return io.NodeOutput(rewriter, info)


@dataclass(frozen=True)
class ConversationTurn:
    """Which turn of which conversation a Rewrite Prompt node produced: wired into Remember Picture, so the
    conversation is named once and the picture lands with the turn it was drawn for."""

    session: str
    turn: int  # 1-based
    created: float  # the turn's creation time: tells it from a turn that replaced it (undo, reset)


def _load_image(path: str) -> torch.Tensor:
    """A picture file as ComfyUI IMAGE ``[1,H,W,3]``."""
    array = np.asarray(open_image(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None].to(host.intermediate_device())


class HunyuanDiTRewritePrompt(io.ComfyNode):
    """Rewrites a request as the next turn of a named conversation that persists on disk."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTRewritePrompt",
            display_name="HunyuanDiT Rewrite Prompt (multi-turn)",
            category=REWRITER_CATEGORY,
            description=(
                "Turns a short request into a rich HunyuanDiT prompt with the conversation so far, like the official "
                "multi-turn demo; a refusal stops the run with the model's answer."
            ),
            inputs=[
                REWRITER.Input("rewriter", tooltip="From HunyuanDiT Load Rewriter."),
                io.String.Input("request", multiline=True, default="画一个木制的鸟", tooltip=(
                    "What to draw, or how to change the last picture (e.g. 变成玻璃的 / make it glass). "
                    "Each queue with a new request adds a turn to the conversation."
                )),
                io.String.Input("session", default="default", tooltip=(
                    "Conversation name. The conversation is saved under it, so queueing again continues it "
                    "(also after a restart); another name starts another conversation."
                )),
                io.Boolean.Input("undo_last", default=False, tooltip=(
                    "Drop the previous turn before this one: retry the last request instead of adding a turn. "
                    "While on, every queue replaces the last turn."
                )),
                io.Boolean.Input("reset", default=False, tooltip=(
                    "Start the conversation over with this request. While on, every queue is a first turn."
                )),
                io.Int.Input("session_seed", default=666, min=0, max=MAX_SEED, tooltip=(
                    "Drawing seed of a new or reset conversation, given on the seed output (the official demo "
                    "keeps one seed, so that the subject stays the same while it changes)."
                )),
                io.Boolean.Input("reuse_seed", default=True, tooltip=(
                    "Every turn draws with the conversation's seed (subject consistency); off: seed + turn."
                )),
                io.Float.Input("img2img_strength", default=0.0, min=0.0, max=1.0, step=0.05, tooltip=(
                    "0 = off. Otherwise init_image is the previous turn's picture (remembered by HunyuanDiT "
                    "Remember Picture) and denoise this strength: wire them through VAE Encode to the sampler "
                    "to keep the composition."
                )),
                INSTRUCTION.Input("instruction", optional=True, tooltip=(
                    "A saved instruction, applied before or after rewriting."
                )),
                TEXT_ENCODER.Input("text_encoder", optional=True, tooltip=(
                    "Connect to cut the prompt with mT5's own tokenizer at its 256-token limit (otherwise "
                    "a cautious estimate is used)."
                )),
            ],
            outputs=[
                io.String.Output(display_name="prompt", tooltip=(
                    "The rewritten prompt: connect to HunyuanDiT Text Encode's positive input."
                )),
                io.Int.Output(display_name="seed", tooltip="This turn's drawing seed."),
                io.Image.Output(display_name="init_image", tooltip=(
                    "The previous picture when img2img is on, else a small black image."
                )),
                io.Float.Output(display_name="denoise", tooltip=(
                    "img2img_strength when there is a previous picture, else 1 (draw from scratch)."
                )),
                io.String.Output(display_name="reply", tooltip="The model's raw answer."),
                CONVERSATION.Output(display_name="conversation", tooltip=(
                    "This turn of the conversation: connect to HunyuanDiT Remember Picture."
                )),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, rewriter, request: str, session: str, undo_last: bool, reset: bool, session_seed: int,
                reuse_seed: bool, img2img_strength: float, instruction: Instruction | None = None,
                text_encoder: TextEncoderHandle | None = None) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        counter = tokenizer_counter(text_encoder.encoder.mt5_tokenizer) if text_encoder is not None else None
        with _sessions().edit(session, seed=session_seed) as conversation:  # saved even when refused
            if reset:
                conversation.reset(seed=session_seed)
            elif undo_last:
                conversation.undo()
            conversation.reuse_seed = reuse_seed
            conversation.img2img_strength = img2img_strength or None
            conversation.validate()
            result = rewriter.rewrite(request, conversation, instruction, count_tokens=counter)
        this_turn = ConversationTurn(session, len(conversation.turns), conversation.turns[-1].created)
        if result.refused:
            raise InputError(f"the rewriter refused this request: {result.reply!r}. Change the request (the "
                             "refusal stays in the conversation: turn undo_last on to drop it)")
        lines = [f"turn {len(conversation.turns)}, seed {result.seed}: {result.prompt}"]
        if not result.draw:
            lines.append("(the model did not mark this as a drawing request; its answer is used as the prompt)")
        if result.truncated:
            lines.append(f"(cut to fit the text encoder: {result.truncated})")
        host.show_text(unique_id, "\n".join(lines), logging.INFO)
        init = _load_image(result.init_image) if result.init_image else torch.zeros(
            1, _BLANK, _BLANK, 3, device=host.intermediate_device())
        outputs = (result.prompt, result.seed, init, float(result.strength or 1.0), result.reply, this_turn)
        return io.NodeOutput(*outputs, ui={"text": lines})


class HunyuanDiTConversationImage(io.ComfyNode):
    """Remembers the turn's picture in the conversation (for img2img from the previous turn and the record)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTConversationImage",
            display_name="HunyuanDiT Remember Picture",
            category=REWRITER_CATEGORY,
            description="Stores the picture with its turn of the conversation (beside the conversation file).",
            inputs=[
                io.Image.Input("images", tooltip="This turn's picture (the first one of a batch is kept)."),
                CONVERSATION.Input("conversation", tooltip=(
                    "From HunyuanDiT Rewrite Prompt: the turn this picture was drawn for."
                )),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, conversation: ConversationTurn) -> io.NodeOutput:
        store = _sessions()
        pixels = (images[0].float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
        with store.edit(conversation.session) as session:
            turns = session.turns
            index = conversation.turn - 1
            if not 0 <= index < len(turns) or turns[index].created != conversation.created:
                raise InputError(f"turn {conversation.turn} of conversation {conversation.session!r} is no longer "
                                 "there (undone or reset since it was drawn); the picture is not recorded")
            path = save_new(store.image_dir(conversation.session), f"turn_{conversation.turn:03d}", ".png",
                            lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
            turns[index].image = str(path.resolve())
        return io.NodeOutput(ui={"text": [f"turn {conversation.turn}: {path.name}"]})


class HunyuanDiTInstruction(io.ComfyNode):
    """Picks a saved instruction (a prompt template such as ``{prompt}，水墨画风格``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTInstruction",
            display_name="HunyuanDiT Saved Instruction",
            category=REWRITER_CATEGORY,
            description="A saved instruction for the prompt rewriter.",
            inputs=[io.Combo.Input("name", options=_instructions().names(), tooltip=(
                "Saved with HunyuanDiT Save Instruction (or built in). Templates marked 'before' shape the request "
                "the LLM reads; the others are added to the rewritten prompt."
            ))],
            outputs=[
                INSTRUCTION.Output(display_name="instruction", tooltip="Connect to HunyuanDiT Rewrite Prompt."),
                io.String.Output(display_name="template", tooltip="The template text."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, name: str) -> str:
        """Run again when the saved template behind the name changes."""
        instruction = _instructions().get(name)
        return f"{instruction.position}:{instruction.template}"

    @classmethod
    def execute(cls, name: str) -> io.NodeOutput:
        instruction = _instructions().get(name)
        return io.NodeOutput(instruction, instruction.template)


class HunyuanDiTSaveInstruction(io.ComfyNode):
    """Saves (or replaces) a named instruction in the user's folder, and passes it on."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTSaveInstruction",
            display_name="HunyuanDiT Save Instruction",
            category=REWRITER_CATEGORY,
            description="Saves a prompt template for HunyuanDiT Saved Instruction and the chat command.",
            inputs=[
                io.String.Input("name", default="my style", tooltip=(
                    "Name to save it under (replaces one of the same name)."
                )),
                io.String.Input("template", multiline=True, default="{prompt}，水墨画风格", tooltip=(
                    "The text with {prompt} where the prompt goes."
                )),
                io.Combo.Input("position", options=list(POSITIONS), default="after", tooltip=(
                    "before: applied to the request the LLM reads; after: added to the rewritten prompt."
                )),
            ],
            outputs=[INSTRUCTION.Output(display_name="instruction", tooltip="Connect to HunyuanDiT Rewrite Prompt.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, name: str, template: str, position: str) -> io.NodeOutput:
        instruction = Instruction(name.strip(), template, position)
        _instructions().save(instruction)
        return io.NodeOutput(instruction, ui={"text": [f"saved {instruction.name!r}"]})


NODES = [
    HunyuanDiTRewriterLoader,
    HunyuanDiTRewritePrompt,
    HunyuanDiTConversationImage,
    HunyuanDiTInstruction,
    HunyuanDiTSaveInstruction,
]
