"""Merging LoRAs into a model's weights in place, and undoing it bit-exactly.

Each changed weight becomes ``W + sum(strength * scale * up @ down)``, the sum computed in fp32 and the result
rounded once to the weight's dtype. Undoing recomputes the same fp32 change and subtracts it; the few elements
where rounding loses the original (binade crossings, ties) are stored at merge time as (index, original value).
So the extra memory is a small fraction of the changed weights, not a copy of them, and any number of
apply/restore cycles gives the original bits back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, ModelFileError
from ..model.dit import HunyuanDiT
from ..model.text_encoder import BilingualTextEncoder
from ..settings.validate import check_float
from .lora import DIT, TEXT_ENCODER, LoRA, LoraModule, some_names

_STATE = "_hunyuan_loras"  # attribute of the merged module holding its MergeState
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class _Merged:
    """What undoing one weight needs: its LoRA modules with their coefficients, and the rounding fix-ups."""

    modules: list[tuple[LoraModule, float]]
    index: torch.Tensor  # flat positions where subtracting the change does not give the original bits
    values: torch.Tensor  # the original values there


@dataclass
class MergeState:
    applied: tuple[tuple[LoRA, float], ...]
    weights: dict[str, _Merged]


def _target(target: HunyuanDiT | BilingualTextEncoder) -> tuple[nn.Module, str]:
    if isinstance(target, HunyuanDiT):
        return target, DIT
    if isinstance(target, BilingualTextEncoder):
        return target.bert, TEXT_ENCODER
    raise InputError(f"apply_loras needs a HunyuanDiT or a BilingualTextEncoder; found {type(target).__name__}")


def check_strength(name: str, strength: object) -> float:
    """A LoRA strength: a finite number in [-10, 10] (the official app offers -1 to 2)."""
    return check_float(f"strength of LoRA '{name}'", strength, -10.0, 10.0)


def _checked(loras: Sequence[tuple[LoRA, float]]) -> list[tuple[LoRA, float]]:
    out = []
    for item in loras:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], LoRA)):
            raise InputError(f"each LoRA must be a (LoRA, strength) pair from hy.load_lora; found {item!r:.80}")
        out.append((item[0], check_strength(item[0].name, item[1])))
    return out


def _plan(module: nn.Module, part: str, loras: list[tuple[LoRA, float]]) -> dict[str, list[tuple[LoraModule, float]]]:
    """Weight name -> its LoRA modules and coefficients; every name and shape checked before anything changes."""
    linears = {name.replace(".", "_"): name for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    plan: dict[str, list[tuple[LoraModule, float]]] = {}
    for lora, strength in loras:
        unmatched = [mods[0].source for path, mods in lora.parts[part].items() if path not in linears]
        if unmatched:
            raise ModelFileError(f"LoRA '{lora.name}': {len(unmatched)} of its {len(lora.parts[part])} modules match "
                                 f"nothing in this model: {some_names(unmatched)}; it was made for another model")
        for path, mods in lora.parts[part].items():
            name = linears[path] + ".weight"
            weight = module.get_parameter(name)
            for m in mods:
                rows, cols = m.up.shape[0] * m.blocks, m.down.shape[1]
                if (rows, cols) != tuple(weight.shape):
                    raise ModelFileError(
                        f"LoRA '{lora.name}': '{m.source}' (down {list(m.down.shape)}, up {list(m.up.shape)}) "
                        f"changes a {[rows, cols]} weight but this model's '{name}' is {list(weight.shape)}: the "
                        "LoRA was made for another Hunyuan-DiT version or width")
                plan.setdefault(name, []).append((m, strength * m.scale))
    return plan


def _delta(weight: torch.Tensor, modules: list[tuple[LoraModule, float]]) -> torch.Tensor:
    """``sum(coef * up @ down)`` in fp32 on the weight's device, each split module on its own rows."""
    delta = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    for m, coef in modules:
        rows = m.up.shape[0]
        part = delta[m.block * rows: (m.block + 1) * rows]
        part.addmm_(m.up.to(weight.device, torch.float32), m.down.to(weight.device, torch.float32), alpha=coef)
    return delta


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_BITS[t.element_size()])


def _merge(weight: torch.Tensor, modules: list[tuple[LoraModule, float]]) -> _Merged:
    delta = _delta(weight, modules)
    merged = torch.add(weight, delta).to(weight.dtype)  # computed in fp32 (type promotion), rounded once
    undone = torch.sub(merged, delta).to(weight.dtype)
    index = (_bits(undone) != _bits(weight)).view(-1).nonzero().view(-1)
    fix = _Merged(modules, index.to(torch.int32).cpu(), weight.view(-1)[index].cpu())  # weights < 2**31 values
    weight.copy_(merged)
    return fix


def _unmerge(weight: torch.Tensor, merged: _Merged) -> None:
    undone = torch.sub(weight, _delta(weight, merged.modules)).to(weight.dtype)
    undone.view(-1)[merged.index.to(weight.device, torch.long)] = merged.values.to(weight.device)
    weight.copy_(undone)


@torch.no_grad()
def apply_loras(target: HunyuanDiT | BilingualTextEncoder, loras: Sequence[tuple[LoRA, float]]) -> None:
    """Make ``target``'s weights its base weights plus exactly these LoRAs at these strengths, in place.

    ``target`` is the DiT, or the text encoder (whose BERT takes the ``te1`` parts); a LoRA without parts for it
    is skipped for it, and strength 0 is no change. ``[]`` restores the base weights bit-exactly; the same set
    (same LoRA objects, same strengths) again does nothing; a different set is merged from the base, never on
    top of an earlier merge. Unmatched modules and wrong shapes raise ModelFileError before anything changes.
    """
    module, part = _target(target)
    wanted = tuple((lora, s) for lora, s in _checked(loras) if s != 0 and lora.parts[part])
    state: MergeState | None = module.__dict__.get(_STATE)
    applied = state.applied if state else ()
    if len(applied) == len(wanted) and all(a is b and s == t for (a, s), (b, t) in zip(applied, wanted)):
        return
    plan = _plan(module, part, list(wanted))
    if state is not None:
        for name, merged in state.weights.items():
            _unmerge(module.get_parameter(name), merged)
        del module.__dict__[_STATE]
    if wanted:
        weights = {name: _merge(module.get_parameter(name), mods) for name, mods in plan.items()}
        module.__dict__[_STATE] = MergeState(wanted, weights)
