"""Reading Hunyuan-DiT LoRAs in every format in the wild into one form: low-rank pairs per target module.

Formats (reference/wave2/lora.md): the official PEFT folder (``adapter_config.json`` + ``adapter_model.*``,
keys ``base_model.model.<module>.lora_A/lora_B.weight``, scale ``lora_alpha / r``); kohya files
(``lora_unet_<module with _>.lora_down/lora_up.weight`` + ``.alpha``, ``lora_te1_`` for BERT, scale
``alpha / rank``); ComfyUI-style names (``diffusion_model.<module>``); diffusers names (``transformer.`` prefix,
split ``to_q/to_k/to_v`` kept as row blocks of the fused ``Wqkv`` / ``kv_proj``); and the old comfyui-hydit
converted files whose keys lost every dot (``lora_unet_blocks_0_attn1_Wqkv_lora_A_weight``). Module paths are
kept with ``_`` for ``.`` and matched against the model's own Linear names the same way (kohya underscores
cannot be parsed back: ``out_proj``, ``kv_proj``, ``default_modulation_1``).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..formats.files import read_json_object, read_state_dict
from ..formats.keys import diffusers_module_to_official
from ..formats.kinds import describe_weights

DIT, TEXT_ENCODER = "dit", "te1"

# Key endings -> which tensor of a LoRA module they hold ("down" = PEFT lora_A, "up" = lora_B).
_ROLES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"),  # kohya, ComfyUI
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),  # PEFT, diffusers
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),  # PEFT models saved whole
    ("_lora_A_weight", "down"), ("_lora_B_weight", "up"),  # comfyui-hydit's converter dropped the dots
)
# Key prefixes -> which model a module belongs to; keys without one are official DiT names.
_PREFIXES = (
    ("base_model.model.", DIT), ("diffusion_model.", DIT), ("transformer.", DIT), ("lora_unet_", DIT),
    ("lora_te1_", TEXT_ENCODER),
)
# Top-level modules (with ``_`` for ``.``) that a Hunyuan-DiT LoRA may touch: the DiT's and BERT's.
_ROOTS = {
    DIT: ("blocks_", "pooler_", "mlp_t5_", "extra_embedder_", "t_embedder_", "x_embedder_", "final_layer_",
          "style_embedder_"),
    TEXT_ENCODER: ("encoder_", "embeddings_", "pooler_"),
}
# Adapter kinds other than plain LoRA, by a key part that only they have.
_OTHER_ADAPTERS = {"dora_scale": "DoRA", "lora_mid": "LoCon/LyCORIS", "hada_": "LoHa", "lokr_": "LoKr",
                   "lora_te2_": "an mT5 (te2) LoRA"}


@dataclass(frozen=True, eq=False)
class LoraModule:
    """One low-rank change ``scale * up @ down`` to rows ``block`` of ``blocks`` of a module's weight (a split
    q/k/v LoRA changes one row block of the fused ``Wqkv``; most change the whole weight: block 0 of 1)."""

    source: str  # the module's name in the file, for messages
    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    scale: float
    block: int = 0
    blocks: int = 1


@dataclass(frozen=True, eq=False)
class LoRA:
    """A loaded LoRA: its modules for the DiT and for BERT (``te1``), keyed by module path with ``_`` for ``.``.
    Compared by identity: applying the same object twice is a no-op (see :func:`apply_loras`)."""

    name: str
    parts: dict[str, dict[str, tuple[LoraModule, ...]]]

    @property
    def has_text_encoder(self) -> bool:
        """Whether the LoRA changes BERT (kohya ``lora_te1_`` parts); those go to the text encoder."""
        return bool(self.parts.get(TEXT_ENCODER))

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(m)} {part}" for part, m in self.parts.items() if m)
        return f"LoRA({self.name!r}: {counts} modules)"


def some_names(names, n: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix, role in _ROLES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _module_path(name: str) -> tuple[str, str, int, int]:
    """A file's module name -> (part, path with ``_``, row block, row blocks)."""
    part, rest = DIT, name
    for prefix, which in _PREFIXES:
        if name.startswith(prefix):
            part, rest = which, name[len(prefix):]
            break
    block, blocks = 0, 1
    if part == DIT and "." in rest:
        rest, block, blocks = diffusers_module_to_official(rest)
    return part, rest.replace(".", "_"), block, blocks


def _peft_config(folder: Path) -> dict | None:
    config = folder / "adapter_config.json"
    return read_json_object(config, "LoRA adapter config") if config.is_file() else None


def _scale_rule(config: dict | None, where: str):
    """``rank -> scale`` from a PEFT config (``lora_alpha / r``, rsLoRA ``/ sqrt(r)``); None without a config."""
    if config is None:
        return None
    if config.get("use_dora"):
        raise ModelFileError(f"{where}: a DoRA adapter (use_dora: true); only plain LoRA is supported")
    for field in ("rank_pattern", "alpha_pattern"):
        if config.get(field):
            raise ModelFileError(f"{where}: per-module {field} is not supported; found {config[field]!r}")
    alpha = config.get("lora_alpha", config.get("r"))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ModelFileError(f"{where}: expected a number for lora_alpha; found {alpha!r}")
    return (lambda r: alpha / math.sqrt(r)) if config.get("use_rslora") else (lambda r: alpha / r)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """The tensors, the PEFT config (if any) and the LoRA's name, for a folder or a file."""
    if path.is_dir():
        files = [path / f"adapter_model.{ext}" for ext in ("safetensors", "bin")]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            listing = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
            raise ModelFileError(f"LoRA folder '{path}': expected adapter_model.safetensors or adapter_model.bin "
                                 f"(a PEFT adapter folder); found {listing}")
        return read_state_dict(found, what="LoRA"), _peft_config(path), path.name
    config = _peft_config(path.parent) if path.name.startswith("adapter_model.") else None
    return read_state_dict(path, containers=("state_dict",), what="LoRA"), config, path.name


def load_lora(path: str | os.PathLike) -> LoRA:
    """Read a Hunyuan-DiT LoRA in any supported format (detected from its keys); see the module docstring.

    A file that is not a Hunyuan-DiT LoRA (a full checkpoint, an SDXL or Flux LoRA, LyCORIS/DoRA) is refused
    with what it is.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"LoRA not found: '{path}' does not exist")
    sd, config, name = _read(path)
    where = f"LoRA '{path}'"
    kind = describe_weights(sd)
    if kind != "a LoRA":
        raise ModelFileError(f"{where} is {kind or 'not a LoRA'}, not a Hunyuan-DiT LoRA (expected lora_A/lora_B "
                             f"or lora_down/lora_up tensors); found keys such as {some_names(sd, 4)}")
    for marker, adapter in _OTHER_ADAPTERS.items():
        if any(marker in k for k in sd):
            raise ModelFileError(f"{where} is {adapter}: only plain LoRA for the DiT and BERT (lora_te1) is "
                                 f"supported; found {some_names(k for k in sd if marker in k)}")
    grouped: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key, tensor in sd.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
        else:
            grouped[split[0]][split[1]] = tensor
    if unknown:
        raise ModelFileError(f"{where}: {len(unknown)} keys are not LoRA tensors (expected names ending in "
                             f".lora_A.weight, .lora_down.weight, .alpha, ...): {some_names(unknown)}")
    return LoRA(name, _modules(grouped, _scale_rule(config, where), where))


def _modules(grouped: dict[str, dict[str, torch.Tensor]], scale_rule, where: str) -> dict[str, dict[str, tuple]]:
    parts: dict[str, dict[str, list[LoraModule]]] = {DIT: defaultdict(list), TEXT_ENCODER: defaultdict(list)}
    foreign = []
    for source, tensors in grouped.items():
        if "down" not in tensors or "up" not in tensors:
            missing = "up (lora_B / lora_up)" if "down" in tensors else "down (lora_A / lora_down)"
            raise ModelFileError(f"{where}: module '{source}' has no {missing} tensor")
        down, up = tensors["down"], tensors["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1] or 0 in down.shape + up.shape:
            raise ModelFileError(f"{where}: module '{source}' has down {list(down.shape)} and up {list(up.shape)}; "
                                 "expected [rank, in] and [out, rank] (Linear layers only)")
        rank = down.shape[0]
        if "alpha" in tensors:
            alpha = float(tensors["alpha"].float().reshape(-1)[0])
            scale = alpha / rank if alpha else 1.0  # kohya: alpha 0 means alpha = rank
        else:
            scale = scale_rule(rank) if scale_rule else 1.0
        part, path, block, blocks = _module_path(source)
        if not path.startswith(_ROOTS[part]):
            foreign.append(source)
            continue
        parts[part][path].append(LoraModule(source, down, up, scale, block, blocks))
    if foreign:
        raise ModelFileError(f"{where}: {len(foreign)} modules are not Hunyuan-DiT or BERT modules (expected names "
                             f"under blocks., pooler., encoder.layer., ...): {some_names(foreign)}")
    return {part: {path: tuple(mods) for path, mods in modules.items()} for part, modules in parts.items()}
