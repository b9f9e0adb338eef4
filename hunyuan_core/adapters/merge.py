"""Merging LoRAs into a model's weights in place, and undoing it bit-exactly.

Each changed weight becomes ``W + sum(strength * scale * up @ down)``, the sum computed in fp32 and the result
rounded once to the weight's dtype. Undoing reads the original weights back from the model file the DiT was
loaded from (``HunyuanDiT.weights_file``), so the merge holds no copy of them. A weight with no file behind it
(a DiT built from a state dict, BERT, a file changed on disk since) is undone by recomputing the same fp32
change and subtracting it; the few elements where rounding loses the original (binade crossings, ties) are
stored at merge time as (index, original value). Either way any number of apply/restore cycles gives the
original bits back.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, ModelFileError
from ..model.dit import HunyuanDiT
from ..model.text_encoder import BilingualTextEncoder
from ..settings.validate import check_float
from .lora import DIT, TEXT_ENCODER, LoRA, LoraModule, some_names

_STATE = "_hunyuan_loras"  # attribute of the merged module holding its MergeState
_FROM_FILE = "_hunyuan_lora_from_file"  # names of the weights whose originals are checked equal to the file
_BAND = 1 << 18  # fp32 values merged at a time (1 MiB)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class _Merged:
    """What undoing one weight needs: its LoRA modules with their coefficients, and the rounding fix-ups (None
    when the original is read back from the model file)."""

    modules: list[tuple[LoraModule, float]]
    index: torch.Tensor | None = None  # flat positions where subtracting the change does not give the original bits
    values: torch.Tensor | None = None  # the original values there


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


def _add_delta(out: torch.Tensor, modules: list[tuple[LoraModule, float]]) -> torch.Tensor:
    """``out += sum(coef * up @ down)`` for an fp32 ``out`` of the weight's shape, each split module on its rows."""
    for m, coef in modules:
        rows = m.up.shape[0]
        out[m.block * rows: (m.block + 1) * rows].addmm_(
            m.up.to(out.device, torch.float32), m.down.to(out.device, torch.float32), alpha=coef)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_BITS[t.element_size()])


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(_bits(a), _bits(b))


def _merge(weight: torch.Tensor, modules: list[tuple[LoraModule, float]], fixups: bool) -> _Merged:
    """Add the change to ``weight`` (in fp32, rounded once); with ``fixups``, also note the values that subtracting
    it again would not restore. Mixed-dtype elementwise ops are slow on the CPU, so everything runs in fp32."""
    merged = _Merged(modules)
    if not fixups:
        _add_in_place(weight, modules)
        return merged
    delta = _add_delta(torch.zeros(weight.shape, dtype=torch.float32, device=weight.device), modules)
    new = (weight.float() + delta).to(weight.dtype)
    undone = (new.float() - delta).to(weight.dtype)
    index = (_bits(undone) != _bits(weight)).view(-1).nonzero().view(-1)
    merged.index, merged.values = index.to(torch.int32).cpu(), weight.view(-1)[index].cpu()  # < 2**31 values
    weight.copy_(new)
    return merged


def _add_in_place(weight: torch.Tensor, modules: list[tuple[LoraModule, float]]) -> None:
    """``weight += change`` a band of rows at a time through one small fp32 buffer that stays in the CPU's cache."""
    f32 = torch.float32
    factors = [(m.up.to(weight.device, f32), m.down.to(weight.device, f32), m.block * m.up.shape[0], coef)
               for m, coef in modules]
    step = max(1, _BAND // weight.shape[1])
    buffer = torch.empty((min(step, weight.shape[0]), weight.shape[1]), dtype=f32, device=weight.device)
    for top in range(0, weight.shape[0], step):
        rows = weight[top: top + step]
        band = buffer[: rows.shape[0]].copy_(rows)
        for up, down, start, coef in factors:
            lo, hi = max(top, start), min(top + rows.shape[0], start + up.shape[0])
            if lo < hi:
                band[lo - top: hi - top].addmm_(up[lo - start: hi - start], down, alpha=coef)
        rows.copy_(band)


def _subtract(weight: torch.Tensor, merged: _Merged) -> None:
    delta = _add_delta(torch.zeros(weight.shape, dtype=torch.float32, device=weight.device), merged.modules)
    weight.copy_(weight.float().sub_(delta))
    if merged.index is not None:
        weight.view(-1)[merged.index.to(weight.device, torch.long)] = merged.values.to(weight.device)


def _checked_from_file(module: nn.Module) -> set[str] | None:
    """The weights of ``module`` known equal to its model file, or None when it has no file (or the file changed
    on disk since it was loaded)."""
    source = getattr(module, "weights_file", None)
    if source is None or not source.unchanged():
        module.__dict__.pop(_FROM_FILE, None)
        return None
    return module.__dict__.setdefault(_FROM_FILE, set())


def _stored(module: nn.Module, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, weight as stored in ``module``'s model file), one at a time."""
    return module.weights_file.read({name: module.get_parameter(name).shape for name in names}) if names else iter(())


def _restore(module: nn.Module, state: MergeState) -> None:
    from_file = [name for name, merged in state.weights.items() if merged.index is None]
    if from_file and _checked_from_file(module) is None:
        warnings.warn("the model file changed on disk since the DiT was loaded: the LoRA is subtracted instead "
                      "(the weights may differ from the originals in the last bit)")
        from_file = []
    for name, original in _stored(module, from_file):
        module.get_parameter(name).copy_(original)
    for name, merged in state.weights.items():
        if name not in from_file:
            _subtract(module.get_parameter(name), merged)


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
        _restore(module, state)
        del module.__dict__[_STATE]
    if wanted:
        checked = _checked_from_file(module)
        if checked is not None:  # compare each weight with the file once; later restores write those bits back
            for name, original in _stored(module, [n for n in plan if n not in checked]):
                weight = module.get_parameter(name)
                if _same_bits(weight, original.to(weight.device, weight.dtype)):
                    checked.add(name)
        weights = {name: _merge(module.get_parameter(name), mods, fixups=name not in (checked or ()))
                   for name, mods in plan.items()}
        module.__dict__[_STATE] = MergeState(wanted, weights)
