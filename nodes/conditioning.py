"""Bilingual prompt encoding: Chinese or English (or both) through BERT (77 tokens) and mT5 (256 tokens)."""

from __future__ import annotations

from hunyuan_core.adapters import apply_loras
from hunyuan_core.model.text_encoder import CLIP_LENGTH, DEFAULT_NEGATIVE_PROMPT

from . import host
from ._common import (
    CONDITIONING,
    CONDITIONING_CATEGORY,
    TEXT_ENCODER,
    TextEncoderHandle,
    io,
)
from .memory import on_compute_device

EMPTY_PROMPT = (
    "The positive prompt is empty: the image follows no description, only guidance away from the negative "
    "prompt. Describe what to draw (Chinese or English)."
)


def truncation_report(label: str, cut: str, bert_length: int) -> str:
    """The warning shown when part of a prompt did not fit the encoders."""
    return (
        f"The {label} prompt is longer than the text encoders take ({bert_length} BERT / 256 mT5 tokens); "
        f"this part was cut and has no effect: {cut!r}"
    )


class HunyuanDiTTextEncode(io.ComfyNode):
    """Encodes a positive and a negative prompt with both of HunyuanDiT's text encoders."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTTextEncode",
            display_name="HunyuanDiT Text Encode (bilingual)",
            category=CONDITIONING_CATEGORY,
            description=(
                "Encodes prompts for HunyuanDiT with its bilingual encoders; warns on the node when the positive "
                "prompt is empty, or when a prompt was too long (showing the part that was cut)."
            ),
            inputs=[
                TEXT_ENCODER.Input("text_encoder", tooltip="BERT + mT5 from a HunyuanDiT loader."),
                io.String.Input("positive", multiline=True, dynamic_prompts=True, default="", tooltip=(
                    "What to draw, in Chinese or English. BERT reads the first 77 tokens, mT5 the first 256."
                )),
                io.String.Input("negative", multiline=True, dynamic_prompts=True, default=DEFAULT_NEGATIVE_PROMPT,
                                tooltip="What to avoid. The default is the official negative prompt (Chinese)."),
                io.Int.Input("bert_length", default=CLIP_LENGTH, min=CLIP_LENGTH, max=512, tooltip=(
                    "Tokens BERT reads (official: 77). Up to 512 lets long prompts reach BERT too, beyond the "
                    "length HunyuanDiT was trained on; prompts within 77 tokens are unchanged."
                )),
            ],
            outputs=[
                CONDITIONING.Output(display_name="positive", tooltip="Encoded positive prompt."),
                CONDITIONING.Output(display_name="negative", tooltip="Encoded negative prompt."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoderHandle, positive: str, negative: str,
                bert_length: int = CLIP_LENGTH) -> io.NodeOutput:
        unique_id = cls.hidden.unique_id
        with on_compute_device(text_encoder.encoder, offload_device=host.text_encoder_offload_device()):
            apply_loras(text_encoder.encoder, list(text_encoder.loras))  # this branch's BERT LoRAs, as in the sampler
            pos = text_encoder.encoder.encode([positive], bert_length).to(device=host.intermediate_device())
            neg = text_encoder.encoder.encode([negative], bert_length).to(device=host.intermediate_device())
        warnings = [EMPTY_PROMPT] if not positive.strip() else []
        warnings += [
            truncation_report(label, emb.truncated[0], bert_length)
            for label, emb in (("positive", pos), ("negative", neg))
            if emb.truncated[0]
        ]
        for text in warnings:
            host.show_text(unique_id, text)
        return io.NodeOutput(pos, neg, ui={"text": warnings})


NODES = [HunyuanDiTTextEncode]
