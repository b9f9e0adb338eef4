"""The LoRA node: adds a LoRA file from ComfyUI's ``loras`` folder to the model (and text encoder) handles.

It merges nothing itself: ComfyUI hands one cached output to every branch of a graph, so the node returns
new handles carrying one more ``(lora, strength)`` and the sampler / text-encode nodes merge their handle's
set right before they run (``hunyuan_core.apply_loras``, from the base weights every time the set changes).
"""

from __future__ import annotations

from dataclasses import replace

from hunyuan_core.adapters import load_lora

from . import host
from ._common import LOADERS, MODEL, TEXT_ENCODER, ModelHandle, TextEncoderHandle, io

LORA_FOLDER = "loras"


def no_text_encoder_note(name: str) -> str:
    """Shown on the node when the file has BERT (``te1``) parts but no text encoder is connected."""
    return (
        f"{name} also changes the text encoder (BERT, kohya lora_te1_* keys): connect the text encoder "
        "through this node to apply that part; only the DiT part is applied now."
    )


class HunyuanDiTLoraLoader(io.ComfyNode):
    """Adds a HunyuanDiT LoRA (official PEFT, kohya, ComfyUI-style or converted names) at a strength; chainable."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HunyuanDiTLoraLoader",
            display_name="HunyuanDiT Load LoRA",
            category=LOADERS,
            description=(
                "Applies a HunyuanDiT LoRA to the DiT, and to the text encoder when the file has BERT parts. "
                "Chain several; the model coming in is left as it is for other branches of the graph."
            ),
            inputs=[
                MODEL.Input("model", tooltip="The DiT from a HunyuanDiT loader or another LoRA node."),
                TEXT_ENCODER.Input("text_encoder", optional=True, tooltip=(
                    "Optional: BERT + mT5, for LoRAs that also train the text encoder (kohya lora_te1_*). "
                    "Passed through unchanged when the file has no such parts."
                )),
                io.Combo.Input("lora_name", options=host.get_filename_list(LORA_FOLDER), tooltip=(
                    "A file in models/loras/: kohya .safetensors/.ckpt, ComfyUI-style, or an official PEFT "
                    "folder's adapter_model.safetensors (its adapter_config.json beside it)."
                )),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=(
                    "How strongly the LoRA changes the weights (1 = as trained, 0 = off, negative = the opposite)."
                )),
            ],
            outputs=[
                MODEL.Output(display_name="model", tooltip="The DiT with this LoRA added."),
                TEXT_ENCODER.Output(display_name="text_encoder", tooltip=(
                    "The text encoder with this LoRA's BERT parts added (unchanged when it has none)."
                )),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model: ModelHandle, lora_name: str, strength: float,
                text_encoder: TextEncoderHandle | None = None) -> io.NodeOutput:
        if strength == 0:  # off, as ComfyUI's LoRA loaders: the file is not even read
            return io.NodeOutput(model, text_encoder)
        lora = load_lora(host.get_full_path(LORA_FOLDER, lora_name))
        model = replace(model, loras=(*model.loras, (lora, strength)))
        if not lora.has_text_encoder:
            return io.NodeOutput(model, text_encoder)
        if text_encoder is None:
            note = no_text_encoder_note(lora_name)
            host.show_text(cls.hidden.unique_id, note)
            return io.NodeOutput(model, None, ui={"text": [note]})
        return io.NodeOutput(model, replace(text_encoder, loras=(*text_encoder.loras, (lora, strength))))


NODES = [HunyuanDiTLoraLoader]
