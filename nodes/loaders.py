"""Loader nodes: the DiT, the bilingual text encoders and the SDXL VAE, from any layout users download.

Models load onto ComfyUI's offload devices (the CPU unless high-VRAM / ``--gpu-only``); ComfyUI's model
management moves them to the compute device when a node uses them (``nodes/memory.py``), so loading a workflow
never takes GPU memory that ComfyUI does not know about.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hunyuan_core.errors import InputError
from hunyuan_core.formats.official import VARIANTS as OFFICIAL_VARIANTS
from hunyuan_core.formats.two_files import load_text_encoder_from_files
from hunyuan_core.loaders import load_dit, load_parts, load_text_encoder, load_vae
from hunyuan_core.model.fp8 import WEIGHT_DTYPES, store_weights
from hunyuan_core.model.versions import VERSION_DEFAULTS
from hunyuan_core.settings.devices import DTYPES

from . import host
from ._common import (
    HUNYUAN_FOLDER,
    LOADERS,
    MODEL,
    TEXT_ENCODER,
    VAE,
    ModelHandle,
    TextEncoderHandle,
    VAEHandle,
    io,
    model_choices,
    resolve_choice,
    resolve_dtype,
)

VARIANTS = ["auto", *OFFICIAL_VARIANTS]
SEPARATE_FILES = "text_encoders/ (bert_file + mt5_file below)"
NONE = "none"
BERT_TOKENIZER_FOLDER = "hydit_clip_tokenizer"

CHECKPOINT_FOLDERS = ("checkpoints", HUNYUAN_FOLDER)
DIT_FOLDERS = ("checkpoints", "diffusion_models", HUNYUAN_FOLDER)
TEXT_ENCODER_FOLDERS = ("checkpoints", HUNYUAN_FOLDER)
VAE_FOLDERS = ("vae", "checkpoints", HUNYUAN_FOLDER)

_TIP_VARIANT = (
    "Which official weight file to use when a folder has several (pytorch_model_ema/module/distill/merge.pt); "
    "auto takes EMA first. Ignored for single files."
)
_TIP_DTYPE = "Weight precision. auto: fp16 on GPUs (the official precision), fp32 on CPU."
DEFAULT_STORAGE = "default"
_TIP_WEIGHT_DTYPE = (
    "Storage of the {what}'s large block Linears. default: as dtype. fp8_e4m3fn / fp8_e5m2: 8-bit weights cast to "
    "dtype per layer, about half the memory of fp16; approximate (layer outputs within 3-5 %, see README)."
)


def _ui(text: str, unique_id: str | None, result: tuple) -> io.NodeOutput:
    """Show ``text`` on the node and return it with the node's outputs."""
    host.show_text(unique_id, text, logging.INFO)
    return io.NodeOutput(*result, ui={"text": [text]})


def _describe(dit, variant: str, choice: str) -> str:
    version = VERSION_DEFAULTS[dit.config.version].name
    dtype = str(dit.dtype).replace("torch.", "")
    stored = {p.dtype for p in dit.blocks.parameters()}
    dtype += "".join(f", block weights {name}" for name, d in WEIGHT_DTYPES.items() if d in stored)
    chosen = "" if variant == "auto" else f", weights {variant}"
    return f"HunyuanDiT {version} ({dit.config.depth} blocks, {dtype}{chosen}) from {choice}"


def bert_vocab_for(weights: str) -> str | None:
    """The BERT vocabulary for weights that carry none: a ``hydit_clip_tokenizer/`` folder or a ``vocab.txt``
    beside the file wins (a fine-tune with its own vocabulary; scripts outside ComfyUI), else the one ComfyUI
    ships for its native HunyuanDiT support."""
    folder = Path(weights).parent
    for candidate in (folder / BERT_TOKENIZER_FOLDER, folder / "vocab.txt"):
        if (candidate / "vocab.txt").is_file() or candidate.is_file():
            return str(candidate)
    return host.comfy_bert_vocab()


def _dtype_input(tooltip: str = _TIP_DTYPE) -> io.Combo.Input:
    return io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=tooltip)


def _weight_dtype_input(what: str) -> io.Combo.Input:
    return io.Combo.Input("weight_dtype", options=[DEFAULT_STORAGE, *WEIGHT_DTYPES], default=DEFAULT_STORAGE,
                          optional=True, tooltip=_TIP_WEIGHT_DTYPE.format(what=what))


def _storage(weight_dtype: str) -> str | None:
    return None if weight_dtype == DEFAULT_STORAGE else weight_dtype


def _variant_input() -> io.Combo.Input:
    return io.Combo.Input("variant", options=VARIANTS, default="auto", tooltip=_TIP_VARIANT)


class HunyuanDiTCheckpointLoader(io.ComfyNode):
    """DiT, text encoders and VAE in one go, from an all-in-one file or an official/diffusers folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTCheckpointLoader",
            display_name="HunyuanDiT Load Checkpoint",
            category=LOADERS,
            description="Loads a whole HunyuanDiT model (DiT, bilingual text encoders, VAE) and reports its release.",
            inputs=[
                io.Combo.Input("ckpt_name", options=model_choices(*CHECKPOINT_FOLDERS), tooltip=(
                    "checkpoints/: ComfyUI's all-in-one hunyuan_dit_*.safetensors. hunyuan/: an official "
                    "release folder (holding t2i/) or a diffusers HunyuanDiT folder, under models/hunyuan/."
                )),
                _variant_input(),
                _dtype_input(),
                _weight_dtype_input("DiT and mT5"),
            ],
            outputs=[
                MODEL.Output(display_name="model", tooltip="The DiT."),
                TEXT_ENCODER.Output(display_name="text_encoder", tooltip="BERT + mT5 with their tokenizers."),
                VAE.Output(display_name="vae", tooltip="The SDXL VAE."),
                io.String.Output(display_name="info", tooltip="Detected release and precision."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, ckpt_name: str, variant: str, dtype: str, weight_dtype: str = DEFAULT_STORAGE) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        path = resolve_choice(ckpt_name, CHECKPOINT_FOLDERS)
        compute = host.torch_device()
        parts = load_parts(  # the VAE in ComfyUI's VAE precision: a plain SDXL VAE overflows in fp16
            path, device=host.offload_device(), dtype=resolve_dtype(dtype, compute), vae_dtype=host.vae_dtype(compute),
            variant=None if variant == "auto" else variant, bert_vocab=bert_vocab_for(path),
            weight_dtype=_storage(weight_dtype),
        )
        info = _describe(parts.dit, variant, ckpt_name)
        result = (
            ModelHandle(parts.dit),
            TextEncoderHandle(parts.text_encoder),
            VAEHandle(parts.vae),
            info,
        )
        return _ui(info, unique_id, result)


class HunyuanDiTModelLoader(io.ComfyNode):
    """The DiT alone: from an all-in-one file, a DiT-only file, or an official/diffusers folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTModelLoader",
            display_name="HunyuanDiT Load Model (DiT)",
            category=LOADERS,
            description="Loads the HunyuanDiT denoiser and reports which release it is.",
            inputs=[
                io.Combo.Input("model_name", options=model_choices(*DIT_FOLDERS), tooltip=(
                    "checkpoints/: all-in-one file. diffusion_models/: a DiT-only .safetensors/.pt (official, "
                    "diffusers or model.-prefixed names). hunyuan/: an official or diffusers folder."
                )),
                _variant_input(),
                _dtype_input(),
                _weight_dtype_input("DiT"),
            ],
            outputs=[
                MODEL.Output(display_name="model", tooltip="The DiT."),
                io.String.Output(display_name="info", tooltip="Detected release (v1.2 or v1.0/v1.1), depth and precision."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model_name: str, variant: str, dtype: str, weight_dtype: str = DEFAULT_STORAGE) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        path = resolve_choice(model_name, DIT_FOLDERS)
        dit = load_dit(
            path, device=host.offload_device(), dtype=resolve_dtype(dtype, host.torch_device()),
            variant=None if variant == "auto" else variant, weight_dtype=_storage(weight_dtype),
        )
        info = _describe(dit, variant, model_name)
        return _ui(info, unique_id, (ModelHandle(dit), info))


class HunyuanDiTTextEncoderLoader(io.ComfyNode):
    """BERT + mT5 (and their tokenizers) from an all-in-one file, an official/diffusers folder, or two files."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        files = [NONE, *host.get_filename_list("text_encoders")]
        return io.Schema(
            node_id="HunyuanDiTTextEncoderLoader",
            display_name="HunyuanDiT Load Text Encoders",
            category=LOADERS,
            description="Loads HunyuanDiT's bilingual text encoders (Chinese-RoBERTa BERT and mT5-XL).",
            inputs=[
                io.Combo.Input("source", options=[*model_choices(*TEXT_ENCODER_FOLDERS), SEPARATE_FILES], tooltip=(
                    "Where BERT and mT5 come from: checkpoints/ (all-in-one file), hunyuan/ (official folder: "
                    "clip_text_encoder/, tokenizer/, mt5/; diffusers: text_encoder/, text_encoder_2/), or two "
                    "files in text_encoders/ picked below."
                )),
                _dtype_input(),
                io.Combo.Input("bert_file", options=files, default=NONE, tooltip=(
                    "Only for the text_encoders/ source: the BERT weights (official clip_text_encoder/"
                    "pytorch_model.bin). Vocabulary: a vocab.txt or hydit_clip_tokenizer/ beside it, else ComfyUI's."
                )),
                io.Combo.Input("mt5_file", options=files, default=NONE, tooltip=(
                    "Only for the text_encoders/ source: the mT5 weights (official mt5/pytorch_model.bin or an "
                    "encoder-only mT5-XL file), with its spiece.model in the same folder."
                )),
                _weight_dtype_input("mT5"),
            ],
            outputs=[TEXT_ENCODER.Output(display_name="text_encoder", tooltip="BERT + mT5 with their tokenizers.")],
        )

    @classmethod
    def execute(cls, source: str, dtype: str, bert_file: str = NONE, mt5_file: str = NONE,
                weight_dtype: str = DEFAULT_STORAGE) -> io.NodeOutput:
        device = host.text_encoder_offload_device()
        precision = resolve_dtype(dtype, host.torch_device())
        if source == SEPARATE_FILES:
            if NONE in (bert_file, mt5_file):
                raise InputError("text encoders from text_encoders/: pick both bert_file and mt5_file")
            bert_path = host.get_full_path("text_encoders", bert_file)
            encoder = load_text_encoder_from_files(
                bert_path, host.get_full_path("text_encoders", mt5_file), device, precision, bert_vocab_for(bert_path),
            )
            store_weights(_storage(weight_dtype), text_encoder=encoder)
        else:
            path = resolve_choice(source, TEXT_ENCODER_FOLDERS)
            encoder = load_text_encoder(path, device=device, dtype=precision, bert_vocab=bert_vocab_for(path),
                                        weight_dtype=_storage(weight_dtype))
        return io.NodeOutput(TextEncoderHandle(encoder))


class HunyuanDiTVAELoader(io.ComfyNode):
    """The SDXL VAE from a VAE file, an all-in-one file, or an official/diffusers folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTVAELoader",
            display_name="HunyuanDiT Load VAE",
            category=LOADERS,
            description="Loads the SDXL VAE that HunyuanDiT's latents decode with.",
            inputs=[
                io.Combo.Input("vae_name", options=model_choices(*VAE_FOLDERS), tooltip=(
                    "vae/: an SDXL VAE file (sdxl_vae.safetensors, sdxl-vae-fp16-fix). checkpoints/: the VAE "
                    "inside an all-in-one file. hunyuan/: the VAE of an official or diffusers folder."
                )),
                _dtype_input(
                    "Weight precision. auto: ComfyUI's VAE precision (bf16 where safe, else fp32). fp16 needs the "
                    "fp16-fix VAE (the one official releases ship)."
                ),
            ],
            outputs=[VAE.Output(display_name="vae", tooltip="The SDXL VAE.")],
        )

    @classmethod
    def execute(cls, vae_name: str, dtype: str) -> io.NodeOutput:
        path = resolve_choice(vae_name, VAE_FOLDERS)
        compute = host.torch_device()
        vae = load_vae(
            path, device=host.vae_offload_device(), dtype=resolve_dtype(dtype, compute, auto=host.vae_dtype(compute)),
        )
        return io.NodeOutput(VAEHandle(vae))


NODES = [HunyuanDiTCheckpointLoader, HunyuanDiTModelLoader, HunyuanDiTTextEncoderLoader, HunyuanDiTVAELoader]
