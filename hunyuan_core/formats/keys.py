"""The one place that knows DiT key names: official (Tencent) <-> diffusers, and wrapper prefixes (plus the one
prefix stripper every layout uses). A ControlNet's names are the DiT's plus its two projections.

Mapping facts: reference/diffusers-dialoggen-sr.md §A.4 (diffusers' own conversion script). Two traps:
official ``norm2`` (before the FFN) is diffusers ``norm3`` and vice versa, and the final layer's
modulation is stored (shift, scale) officially but (scale, shift) in diffusers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .files import StateDict

# Prefixes that wrap a DiT inside other files, longest first (ComfyUI checkpoints, DeepSpeed, Lightning).
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "module.", "transformer.")

# (official, diffusers) for keys outside the blocks, as name prefixes.
_GLOBAL = [
    ("pooler.", "time_extra_emb.pooler."),
    ("t_embedder.mlp.0.", "time_extra_emb.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_extra_emb.timestep_embedder.linear_2."),
    ("extra_embedder.0.", "time_extra_emb.extra_embedder.linear_1."),
    ("extra_embedder.2.", "time_extra_emb.extra_embedder.linear_2."),
    ("style_embedder.", "time_extra_emb.style_embedder."),
    ("x_embedder.proj.", "pos_embed.proj."),
    ("mlp_t5.0.", "text_embedder.linear_1."),
    ("mlp_t5.2.", "text_embedder.linear_2."),
    ("final_layer.adaLN_modulation.1.", "norm_out.linear."),
    ("final_layer.linear.", "proj_out."),
    ("before_proj.", "input_block."),  # ControlNet
    ("after_proj_list.", "controlnet_blocks."),  # ControlNet
]
# (official, diffusers) inside ``blocks.{i}.``; fused projections are handled separately.
_BLOCK = [
    ("norm1.", "norm1.norm."),
    ("default_modulation.1.", "norm1.linear."),
    ("attn1.q_norm.", "attn1.norm_q."),
    ("attn1.k_norm.", "attn1.norm_k."),
    ("attn1.out_proj.", "attn1.to_out.0."),
    ("attn2.q_proj.", "attn2.to_q."),
    ("attn2.q_norm.", "attn2.norm_q."),
    ("attn2.k_norm.", "attn2.norm_k."),
    ("attn2.out_proj.", "attn2.to_out.0."),
    ("norm2.", "norm3."),
    ("norm3.", "norm2."),
    ("mlp.fc1.", "ff.net.0.proj."),
    ("mlp.fc2.", "ff.net.2."),
    ("skip_norm.", "skip_norm."),
    ("skip_linear.", "skip_linear."),
]
_FINAL_MOD = ("final_layer.adaLN_modulation.1.", "norm_out.linear.")


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _rename(name: str, table: list[tuple[str, str]], src: int) -> str | None:
    for pair in table:
        if name.startswith(pair[src]):
            return pair[1 - src] + name[len(pair[src]) :]
    return None


def official_to_diffusers(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert official-named DiT weights to diffusers ``HunyuanDiT2DModel`` names."""
    out: StateDict = {}
    for name, t in sd.items():
        m = re.match(r"(blocks\.\d+\.)(.*)", name)
        if m:
            head, rest = m.groups()
            if rest.startswith("attn1.Wqkv."):
                for proj, part in zip(("to_q", "to_k", "to_v"), t.chunk(3, dim=0)):
                    out[f"{head}attn1.{proj}.{rest.rsplit('.', 1)[1]}"] = part
                continue
            if rest.startswith("attn2.kv_proj."):
                for proj, part in zip(("to_k", "to_v"), t.chunk(2, dim=0)):
                    out[f"{head}attn2.{proj}.{rest.rsplit('.', 1)[1]}"] = part
                continue
            new = _rename(rest, _BLOCK, 0)
            out[head + (new if new is not None else rest)] = t
            continue
        if name.startswith(_FINAL_MOD[0]):
            t = _swap_halves(t)
        new = _rename(name, _GLOBAL, 0)
        out[new if new is not None else name] = t
    return out


def diffusers_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert diffusers ``HunyuanDiT2DModel`` weights to official names (the inverse of the above)."""
    out: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in sd.items():
        m = re.match(r"(blocks\.\d+\.)(.*)", name)
        if m:
            head, rest = m.groups()
            fm = re.match(r"(attn[12])\.(to_q|to_k|to_v)\.(weight|bias)$", rest)
            if fm and not (fm.group(1) == "attn2" and fm.group(2) == "to_q"):
                attn, proj, kind = fm.groups()
                target = f"{head}attn1.Wqkv.{kind}" if attn == "attn1" else f"{head}attn2.kv_proj.{kind}"
                fused.setdefault(target, {})[proj] = t
                continue
            new = _rename(rest, _BLOCK, 1)
            out[head + (new if new is not None else rest)] = t
            continue
        new = _rename(name, _GLOBAL, 1)
        if name.startswith(_FINAL_MOD[1]):
            t = _swap_halves(t)
        out[new if new is not None else name] = t
    for target, parts in fused.items():
        order = ("to_q", "to_k", "to_v") if ".attn1." in target else ("to_k", "to_v")
        out[target] = torch.cat([parts[p] for p in order], dim=0)
    return out


# diffusers' split projections -> (official fused module, row block, number of row blocks): [q; k; v] and [k; v].
_SPLIT = {"attn1.to_q": ("attn1.Wqkv", 0, 3), "attn1.to_k": ("attn1.Wqkv", 1, 3), "attn1.to_v": ("attn1.Wqkv", 2, 3),
          "attn2.to_k": ("attn2.kv_proj", 0, 2), "attn2.to_v": ("attn2.kv_proj", 1, 2)}


def diffusers_module_to_official(name: str) -> tuple[str, int, int]:
    """A diffusers DiT module path -> (official module path, row block, row blocks): ``blocks.0.attn1.to_k`` is
    rows 1 of 3 of ``blocks.0.attn1.Wqkv``; a module diffusers names like the official model maps to itself."""
    m = re.match(r"(blocks\.\d+\.)(.*)", name)
    if m:
        head, rest = m.groups()
        if rest in _SPLIT:
            fused, index, count = _SPLIT[rest]
            return head + fused, index, count
        new = _rename(rest + ".", _BLOCK, 1)
        return (head + new[:-1] if new is not None else name), 0, 1
    new = _rename(name + ".", _GLOBAL, 1)
    return (new[:-1] if new is not None else name), 0, 1


def is_diffusers_dit(sd: Mapping[str, torch.Tensor]) -> bool:
    """True for diffusers-named DiT weights (``pos_embed.proj``/``time_extra_emb`` instead of official names)."""
    return "pos_embed.proj.weight" in sd or any(k.startswith("time_extra_emb.") for k in sd)


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The entries under ``prefix``, with the prefix removed (all others dropped)."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def strip_dit_prefix(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Drop the wrapper prefix under which a file stores its DiT, keeping only those keys.

    A ComfyUI all-in-one file holds ``model.diffusion_model.*`` next to ``vae.*`` and ``text_encoders.*``;
    the prefix that carries the DiT's ``mlp_t5``/``text_embedder`` weights is the one used.
    """
    for prefix in DIT_PREFIXES:
        if f"{prefix}mlp_t5.0.weight" in sd or f"{prefix}text_embedder.linear_1.weight" in sd:
            return strip_prefix(sd, prefix)
    return dict(sd)


def to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Any DiT state dict we accept -> official names without prefixes (unknown layouts pass through unchanged)."""
    sd = strip_dit_prefix(sd)
    return diffusers_to_official(sd) if is_diffusers_dit(sd) else sd
