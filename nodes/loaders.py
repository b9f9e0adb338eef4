"""Loader nodes: the DiT, the bilingual text encoders and the SDXL VAE, from any layout users download.

Models load onto ComfyUI's offload device (the CPU unless high-VRAM) and move to the compute device only
while they work, so loading a workflow never takes GPU memory that ComfyUI does not know about.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hunyuan_core.formats import kinds
from hunyuan_core.errors import InputError, ModelFileError
from hunyuan_core.formats.files import read_state_dict
from hunyuan_core.loaders import load_dit, load_text_encoder, load_vae
from hunyuan_core.model.text_encoder import (
    SINGLE_FILE_BERT_PREFIX,
    SINGLE_FILE_MT5_PREFIX,
    SINGLE_FILE_SPIECE_KEY,
    load_text_encoder_from_single_file,
)
from hunyuan_core.model.versions import VERSION_DEFAULTS
from hunyuan_core.pipeline import load_pipeline
from hunyuan_core.settings.devices import DTYPES

from . import host
from ._common import (
    CATEGORY,
    HUNYUAN_FOLDER,
    MODEL,
    TEXT_ENCODER,
    VAE,
    ModelHandle,
    TextEncoderHandle,
    VAEHandle,
    model_choices,
    resolve_choice,
    resolve_dtype,
)

VARIANTS = ["auto", "ema", "module", "distill"]
TEXT_ENCODER_POLICIES = ["offload after encoding", "keep on GPU"]
SEPARATE_FILES = "text_encoders/ (bert_file + mt5_file below)"
NONE = "none"
BERT_TOKENIZER_FOLDER = "hydit_clip_tokenizer"

CHECKPOINT_FOLDERS = ("checkpoints", HUNYUAN_FOLDER)
DIT_FOLDERS = ("checkpoints", "diffusion_models", HUNYUAN_FOLDER)
TEXT_ENCODER_FOLDERS = ("checkpoints", HUNYUAN_FOLDER)
VAE_FOLDERS = ("vae", "checkpoints", HUNYUAN_FOLDER)

_TIP_VARIANT = (
    "Which official weight file to use when a folder has several (pytorch_model_ema/module/distill.pt); "
    "auto takes EMA first. Ignored for single files."
)
_TIP_DTYPE = "Weight precision. auto: fp16 on GPUs (the official precision), fp32 on CPU."
_TIP_POLICY = (
    "After encoding a prompt, move BERT + mT5 (about 4 GB in fp16) off the GPU, or keep them there for "
    "faster re-encoding. ComfyUI's --lowvram/--novram always offload."
)


def _ui(text: str, unique_id: str | None, result: tuple) -> dict:
    """Show ``text`` on the node and return it with the node's outputs."""
    host.show_text(unique_id, text, logging.INFO)
    return {"ui": {"text": [text]}, "result": result}


def _describe(dit, variant: str, choice: str) -> str:
    version = VERSION_DEFAULTS[dit.version].name
    dtype = str(dit.dtype).replace("torch.", "")
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


def _read_encoder_file(path: str, kind: str, widget: str) -> dict[str, torch.Tensor]:
    """The weights of one text encoder file, refused (after any truncation error) unless they are ``kind``."""
    sd = read_state_dict(path, ("state_dict", "model"), widget)
    found = kinds.describe_weights(sd)
    if found != kind:
        raise ModelFileError(f"{widget}: '{path}' is {found or 'no model this pack knows'}; expected {kind}")
    return sd


def load_text_encoder_from_files(bert_path: str, mt5_path: str, device, dtype):
    """BERT and mT5 from two weight files (e.g. the official clip_text_encoder/pytorch_model.bin and
    mt5/pytorch_model.bin copied into text_encoders/), read through the core's all-in-one loader.

    mT5's tokenizer is the ``spiece.model`` beside the mT5 file; BERT's vocabulary follows
    :func:`bert_vocab_for`. A file of another kind (swapped files, a VAE) is named for what it is.
    """
    bert = _read_encoder_file(bert_path, kinds.BERT, "bert_file")
    mt5 = _read_encoder_file(mt5_path, kinds.T5, "mt5_file")
    spiece = Path(mt5_path).parent / "spiece.model"
    if not spiece.is_file():
        raise ModelFileError(
            f"mT5 tokenizer not found: expected '{spiece}' beside the mT5 weights (the spiece.model of the "
            "official t2i/mt5/ folder or of google/mt5-xl)"
        )
    vocab = bert_vocab_for(bert_path)
    if vocab is None:
        raise ModelFileError(
            f"BERT vocabulary not found: expected '{Path(bert_path).parent / BERT_TOKENIZER_FOLDER}/vocab.txt' "
            "or a vocab.txt beside the BERT weights (outside ComfyUI nothing else provides one)"
        )
    combined = {SINGLE_FILE_BERT_PREFIX + k: v for k, v in bert.items()}
    combined.update({SINGLE_FILE_MT5_PREFIX + k: v for k, v in mt5.items()})
    combined[SINGLE_FILE_SPIECE_KEY] = torch.frombuffer(bytearray(spiece.read_bytes()), dtype=torch.uint8)
    return load_text_encoder_from_single_file(combined, bert_vocab=vocab, device=device, dtype=dtype)


def _text_encoder_handle(encoder, policy: str, choice: str) -> TextEncoderHandle:
    return TextEncoderHandle(encoder, keep_on_gpu=policy == "keep on GPU", source=choice)


class HunyuanDiTCheckpointLoader:
    """DiT, text encoders and VAE in one go, from an all-in-one file or an official/diffusers folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (model_choices(*CHECKPOINT_FOLDERS), {"tooltip": (
                    "checkpoints/: ComfyUI's all-in-one hunyuan_dit_*.safetensors. hunyuan/: an official "
                    "release folder (holding t2i/) or a diffusers HunyuanDiT folder, under models/hunyuan/."
                )}),
                "variant": (VARIANTS, {"default": "auto", "tooltip": _TIP_VARIANT}),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": _TIP_DTYPE}),
                "text_encoder_policy": (
                    TEXT_ENCODER_POLICIES, {"default": TEXT_ENCODER_POLICIES[0], "tooltip": _TIP_POLICY},
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (MODEL, TEXT_ENCODER, VAE, "STRING")
    RETURN_NAMES = ("model", "text_encoder", "vae", "info")
    OUTPUT_TOOLTIPS = (
        "The DiT.", "BERT + mT5 with their tokenizers.", "The SDXL VAE.", "Detected release and precision.",
    )
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a whole HunyuanDiT model (DiT, bilingual text encoders, VAE) and reports its release."

    def load(self, ckpt_name: str, variant: str, dtype: str, text_encoder_policy: str, unique_id: str | None = None):
        path = resolve_choice(ckpt_name, CHECKPOINT_FOLDERS)
        compute = host.torch_device()
        pipe = load_pipeline(
            path, device=host.offload_device(), dtype=resolve_dtype(dtype, compute),
            variant=None if variant == "auto" else variant, bert_vocab=bert_vocab_for(path),
        )
        vae_dtype = host.vae_dtype(compute)  # ComfyUI's VAE precision: a plain SDXL VAE overflows in fp16
        if pipe.vae.dtype != vae_dtype:
            pipe.vae.to(dtype=vae_dtype)
        info = _describe(pipe.dit, variant, ckpt_name)
        result = (
            ModelHandle(pipe.dit, pipe.dit.version, ckpt_name),
            _text_encoder_handle(pipe.text_encoder, text_encoder_policy, ckpt_name),
            VAEHandle(pipe.vae, ckpt_name),
            info,
        )
        return _ui(info, unique_id, result)


class HunyuanDiTModelLoader:
    """The DiT alone: from an all-in-one file, a DiT-only file, or an official/diffusers folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (model_choices(*DIT_FOLDERS), {"tooltip": (
                    "checkpoints/: all-in-one file. diffusion_models/: a DiT-only .safetensors/.pt (official, "
                    "diffusers or model.-prefixed names). hunyuan/: an official or diffusers folder."
                )}),
                "variant": (VARIANTS, {"default": "auto", "tooltip": _TIP_VARIANT}),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": _TIP_DTYPE}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The DiT.", "Detected release (v1.2 or v1.0/v1.1), depth and precision.")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the HunyuanDiT denoiser and reports which release it is."

    def load(self, model_name: str, variant: str, dtype: str, unique_id: str | None = None):
        path = resolve_choice(model_name, DIT_FOLDERS)
        dit = load_dit(
            path, device=host.offload_device(), dtype=resolve_dtype(dtype, host.torch_device()),
            variant=None if variant == "auto" else variant,
        )
        info = _describe(dit, variant, model_name)
        return _ui(info, unique_id, (ModelHandle(dit, dit.version, model_name), info))


class HunyuanDiTTextEncoderLoader:
    """BERT + mT5 (and their tokenizers) from an all-in-one file, an official/diffusers folder, or two files."""

    @classmethod
    def INPUT_TYPES(cls):
        files = [NONE, *host.get_filename_list("text_encoders")]
        return {
            "required": {
                "source": ([*model_choices(*TEXT_ENCODER_FOLDERS), SEPARATE_FILES], {"tooltip": (
                    "Where BERT and mT5 come from: checkpoints/ (all-in-one file), hunyuan/ (official folder: "
                    "clip_text_encoder/, tokenizer/, mt5/; diffusers: text_encoder/, text_encoder_2/), or two "
                    "files in text_encoders/ picked below."
                )}),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": _TIP_DTYPE}),
                "policy": (TEXT_ENCODER_POLICIES, {"default": TEXT_ENCODER_POLICIES[0], "tooltip": _TIP_POLICY}),
                "bert_file": (files, {"default": NONE, "tooltip": (
                    "Only for the text_encoders/ source: the BERT weights (official clip_text_encoder/"
                    "pytorch_model.bin). Vocabulary: a vocab.txt or hydit_clip_tokenizer/ beside it, else ComfyUI's."
                )}),
                "mt5_file": (files, {"default": NONE, "tooltip": (
                    "Only for the text_encoders/ source: the mT5 weights (official mt5/pytorch_model.bin or an "
                    "encoder-only mT5-XL file), with its spiece.model in the same folder."
                )}),
            },
        }

    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("BERT + mT5 with their tokenizers.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads HunyuanDiT's bilingual text encoders (Chinese-RoBERTa BERT and mT5-XL)."

    def load(self, source: str, dtype: str, policy: str, bert_file: str = NONE, mt5_file: str = NONE):
        device = host.text_encoder_offload_device()
        weight_dtype = resolve_dtype(dtype, host.torch_device())
        if source == SEPARATE_FILES:
            if NONE in (bert_file, mt5_file):
                raise InputError("text encoders from text_encoders/: pick both bert_file and mt5_file")
            encoder = load_text_encoder_from_files(
                host.get_full_path("text_encoders", bert_file), host.get_full_path("text_encoders", mt5_file),
                device, weight_dtype,
            )
        else:
            path = resolve_choice(source, TEXT_ENCODER_FOLDERS)
            encoder = load_text_encoder(path, device=device, dtype=weight_dtype, bert_vocab=bert_vocab_for(path))
        return (_text_encoder_handle(encoder, policy, source),)


class HunyuanDiTVAELoader:
    """The SDXL VAE from a VAE file, an all-in-one file, or an official/diffusers folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (model_choices(*VAE_FOLDERS), {"tooltip": (
                    "vae/: an SDXL VAE file (sdxl_vae.safetensors, sdxl-vae-fp16-fix). checkpoints/: the VAE "
                    "inside an all-in-one file. hunyuan/: the VAE of an official or diffusers folder."
                )}),
                "dtype": (list(DTYPES), {"default": "auto", "tooltip": (
                    "VAE precision. auto: ComfyUI's VAE precision (bf16 where safe, else fp32). fp16 needs the "
                    "fp16-fix VAE (the one official releases ship)."
                )}),
            },
        }

    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The SDXL VAE.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the SDXL VAE that HunyuanDiT's latents decode with."

    def load(self, vae_name: str, dtype: str):
        path = resolve_choice(vae_name, VAE_FOLDERS)
        compute = host.torch_device()
        vae = load_vae(
            path, device=host.offload_device(), dtype=resolve_dtype(dtype, compute, auto=host.vae_dtype(compute)),
        )
        return (VAEHandle(vae, vae_name),)


NODE_CLASS_MAPPINGS = {
    "HunyuanDiTCheckpointLoader": HunyuanDiTCheckpointLoader,
    "HunyuanDiTModelLoader": HunyuanDiTModelLoader,
    "HunyuanDiTTextEncoderLoader": HunyuanDiTTextEncoderLoader,
    "HunyuanDiTVAELoader": HunyuanDiTVAELoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HunyuanDiTCheckpointLoader": "Load HunyuanDiT Checkpoint",
    "HunyuanDiTModelLoader": "Load HunyuanDiT Model (DiT)",
    "HunyuanDiTTextEncoderLoader": "Load HunyuanDiT Text Encoders",
    "HunyuanDiTVAELoader": "Load HunyuanDiT VAE",
}
