"""DiT architecture, inferred from the weights so that the 1.5B release and a tiny test model share one path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

import torch

from ..errors import ModelFileError
from ..formats.files import tensor_shape
from ..formats.kinds import describe_weights

SIZE_COND_DIM = 6 * 256  # six image_meta_size scalars, 256 sinusoid features each

# Keys every Hunyuan-DiT checkpoint has (official names); used to tell a DiT from any other file.
REQUIRED_KEYS = (
    "text_embedding_padding",
    "mlp_t5.0.weight",
    "pooler.positional_embedding",
    "pooler.c_proj.weight",
    "x_embedder.proj.weight",
    "extra_embedder.0.weight",
    "blocks.0.attn1.q_norm.weight",
    "blocks.0.mlp.fc1.weight",
    "final_layer.linear.weight",
)
# A ControlNet copies the DiT's front end and first-half blocks, adds ``before_proj`` and ``after_proj_list``.
CONTROLNET_REQUIRED_KEYS = (*REQUIRED_KEYS[:-1], "before_proj.weight", "after_proj_list.0.weight")


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of HunYuanDiT; the defaults are DiT-g/2 v1.2 (every released checkpoint is DiT-g/2)."""

    depth: int = 40
    hidden_size: int = 1408
    num_heads: int = 16
    mlp_hidden: int = 6144
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int = 8
    text_dim: int = 1024
    t5_dim: int = 2048
    text_len: int = 77
    t5_len: int = 256
    pooled_dim: int = 1024
    pooler_heads: int = 8
    size_cond: bool = False
    style_cond: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def extra_in_dim(self) -> int:
        return self.pooled_dim + (SIZE_COND_DIM if self.size_cond else 0) + (self.hidden_size if self.style_cond else 0)

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def skip_count(self) -> int:
        """How many long skips the first half passes to the second (blocks 0 .. depth/2 - 2): one ControlNet
        block and one control each."""
        return self.depth // 2 - 1

    @property
    def version(self) -> str:
        """The release family: ``"1.1"`` for the size/style-conditioned v1.0 and v1.1, ``"1.2"`` otherwise
        (keys of ``versions.VERSION_DEFAULTS``)."""
        return "1.1" if self.size_cond or self.style_cond else "1.2"

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> "DiTConfig":
        """Read the architecture off official-named weights; raise ModelFileError if they are not a Hunyuan-DiT."""
        return cls._from_weights(sd, where, REQUIRED_KEYS, "Hunyuan-DiT")

    @classmethod
    def from_controlnet_state_dict(cls, sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> "DiTConfig":
        """The architecture of the DiT a ControlNet (official names) was made for: its blocks are that DiT's
        first ``depth / 2 - 1``. A ControlNet has no final layer, so ``out_channels`` is the learned-sigma
        default of every release. Raise ModelFileError if the weights are not a Hunyuan-DiT ControlNet."""
        config = cls._from_weights(sd, where, CONTROLNET_REQUIRED_KEYS, "Hunyuan-DiT ControlNet")
        return replace(config, depth=2 * (config.depth + 1))

    @classmethod
    def _from_weights(cls, sd: Mapping[str, torch.Tensor], where: str, required: tuple[str, ...], what: str) -> "DiTConfig":
        """The shapes of the blocks and embedders (``depth`` = the number of blocks found)."""
        missing = [k for k in required if k not in sd]
        if missing:
            kind = describe_weights(sd)
            found = f"this looks like {kind}" if kind else f"found {len(sd)} tensors starting with: {', '.join(list(sd)[:5]) or 'none'}"
            raise ModelFileError(
                f"{where}: not a {what} checkpoint ({found}); a {what} has keys such as {', '.join(missing[:3])}"
            )
        shape = partial(tensor_shape, sd, where=where)  # (key, ndim) -> checked shape
        hidden, in_ch, patch, _ = shape("x_embedder.proj.weight", 4)
        (head_dim,) = shape("blocks.0.attn1.q_norm.weight", 1)
        block_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        depth = max(block_ids) + 1
        if block_ids != set(range(depth)):
            raise ModelFileError(f"{where}: incomplete Hunyuan-DiT checkpoint: blocks {sorted(set(range(depth)) - block_ids)} missing")
        positions, _ = shape("pooler.positional_embedding", 2)
        t5_len = positions - 1
        pooled_dim, _ = shape("pooler.c_proj.weight", 2)
        style_cond = "style_embedder.weight" in sd
        _, extra_in = shape("extra_embedder.0.weight", 2)
        size_part = extra_in - pooled_dim - (hidden if style_cond else 0)
        if size_part not in (0, SIZE_COND_DIM):
            raise ModelFileError(
                f"{where}: extra_embedder.0.weight takes {extra_in} inputs; expected {pooled_dim} (v1.2) or "
                f"{pooled_dim + SIZE_COND_DIM + hidden} (v1.0/v1.1 with size and style conditioning)"
            )
        text_tokens, text_dim = shape("text_embedding_padding", 2)
        final_out = shape("final_layer.linear.weight", 2)[0] if "final_layer.linear.weight" in sd else 2 * in_ch * patch**2
        if hidden % head_dim or final_out % (patch * patch) or not 0 < t5_len < text_tokens:
            raise ModelFileError(
                f"{where}: inconsistent Hunyuan-DiT shapes: width {hidden} with q_norm size {head_dim} (must divide "
                f"it), final layer {final_out} outputs for patch {patch} (a multiple of {patch * patch}), "
                f"{t5_len} mT5 tokens of {text_tokens} text tokens (fewer, at least 1)"
            )
        return cls(
            depth=depth,
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            mlp_hidden=shape("blocks.0.mlp.fc1.weight", 2)[0],
            patch_size=patch,
            in_channels=in_ch,
            out_channels=final_out // (patch * patch),
            text_dim=text_dim,
            t5_dim=shape("mlp_t5.0.weight", 2)[1],
            text_len=text_tokens - t5_len,
            t5_len=t5_len,
            pooled_dim=pooled_dim,
            size_cond=size_part == SIZE_COND_DIM,
            style_cond=style_cond,
        )
