"""Bilingual prompt encoding: Chinese or English (or both) through BERT (77 tokens) and mT5 (256 tokens)."""

from __future__ import annotations

from hunyuan_core.model.text_encoder import DEFAULT_NEGATIVE_PROMPT

from . import host
from ._common import (
    CATEGORY,
    CONDITIONING,
    TEXT_ENCODER,
    TextEncoderHandle,
    on_compute_device,
)

EMPTY_PROMPT = (
    "The positive prompt is empty: the image follows no description, only guidance away from the negative "
    "prompt. Describe what to draw (Chinese or English)."
)


def truncation_report(label: str, cut: str) -> str:
    """The warning shown when part of a prompt did not fit the encoders."""
    return (
        f"The {label} prompt is longer than the text encoders take (77 BERT / 256 mT5 tokens); "
        f"this part was cut and has no effect: {cut!r}"
    )


class HunyuanDiTTextEncode:
    """Encodes a positive and a negative prompt with both of HunyuanDiT's text encoders."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "BERT + mT5 from a HunyuanDiT loader."}),
                "positive": ("STRING", {
                    "multiline": True, "dynamicPrompts": True, "default": "",
                    "tooltip": (
                        "What to draw, in Chinese or English. BERT reads the first 77 tokens, mT5 the first 256."
                    ),
                }),
                "negative": ("STRING", {
                    "multiline": True, "dynamicPrompts": True, "default": DEFAULT_NEGATIVE_PROMPT,
                    "tooltip": "What to avoid. The default is the official negative prompt (Chinese).",
                }),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (CONDITIONING, CONDITIONING)
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("Encoded positive prompt.", "Encoded negative prompt.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Encodes prompts for HunyuanDiT with its bilingual encoders; warns on the node when the positive "
        "prompt is empty, or when a prompt was too long (showing the part that was cut)."
    )

    def encode(self, text_encoder: TextEncoderHandle, positive: str, negative: str, unique_id: str | None = None):
        keep = text_encoder.keep_on_gpu and not host.low_vram()
        rest = None if keep else host.text_encoder_offload_device()
        with on_compute_device(text_encoder.encoder, rest):
            pos = text_encoder.encoder.encode([positive]).to(device=host.intermediate_device())
            neg = text_encoder.encoder.encode([negative]).to(device=host.intermediate_device())
        warnings = [EMPTY_PROMPT] if not positive.strip() else []
        warnings += [
            truncation_report(label, emb.truncated[0])
            for label, emb in (("positive", pos), ("negative", neg))
            if emb.truncated[0]
        ]
        for text in warnings:
            host.show_text(unique_id, text)
        return {"ui": {"text": warnings}, "result": (pos, neg)}


NODE_CLASS_MAPPINGS = {"HunyuanDiTTextEncode": HunyuanDiTTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"HunyuanDiTTextEncode": "HunyuanDiT Text Encode (bilingual)"}
