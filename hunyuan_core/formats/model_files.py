"""The one description of a model on disk that layout detection returns: where each part lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TextEncoderFiles:
    """Folders of the BERT and mT5 encoders and their tokenizers."""

    bert: Path
    bert_tokenizer: Path
    mt5: Path
    mt5_tokenizer: Path


@dataclass(frozen=True)
class ModelFiles:
    """The parts of one model. ``layout`` is official | diffusers | single-file (ComfyUI all-in-one) | dit-only.

    ``checkpoint`` is the content of a single weights file (all-in-one or DiT-only), read once while the layout
    was detected (safetensors memory-mapped), so that no part reads the file again.
    """

    layout: str
    dit: Path  # a weights file, or a diffusers transformer folder
    variant: str | None = None  # the official weight file chosen (ema, module, distill, merge)
    variants: dict[str, Path] = field(default_factory=dict)  # every official weight file found
    text_encoder: TextEncoderFiles | None = None
    vae: Path | None = None  # a diffusers-style VAE folder
    checkpoint: object = field(default=None, repr=False)

    @property
    def is_single_file(self) -> bool:
        return self.layout == "single-file"
