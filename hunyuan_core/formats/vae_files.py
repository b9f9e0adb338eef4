"""Reading the SDXL VAE from disk: a diffusers-style folder (diffusers ``vae/``, official ``sdxl-vae-fp16-fix/``)
or bare weights in LDM names (the all-in-one file's ``vae.*``, ``sdxl_vae.safetensors``) or diffusers names.

Bare weights carry no configuration: it is read off the tensors, and what they cannot tell is SDXL's value.
LDM names are converted by diffusers' own converter; diffusers names load as they are. Every tensor is
materialised once, in the given dtype and device, into a model built on the meta device.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..model.materialise import build_with_weights
from ..model.vae import SDXL_SAMPLE_SIZE, SDXL_SCALING_FACTOR
from .files import (
    StateDict,
    offline,
    read_folder_state_dict,
    read_json_object,
    tensor_shape,
)

CPU = torch.device("cpu")
LDM_NORM_GROUPS = 32  # GroupNorm group count is not stored in weights; every LDM/SDXL VAE uses 32

# Attention names of VAE files saved by diffusers < 0.15 (still found in old downloads) -> current names.
_OLD_ATTENTION_NAMES = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))

# Where each naming keeps what the configuration is read from: (levels, layers per level, level width, mid attention).
_LDM_NAMES = (r"encoder\.down\.(\d+)\.", r"encoder\.down\.0\.block\.(\d+)\.", "encoder.down.{}.block.0.conv1.weight",
              "encoder.mid.attn_1.q.weight")
_DIFFUSERS_NAMES = (r"encoder\.down_blocks\.(\d+)\.", r"encoder\.down_blocks\.0\.resnets\.(\d+)\.",
                    "encoder.down_blocks.{}.resnets.0.conv1.weight", "encoder.mid_block.attentions.0.to_q.weight")


def _assemble(config: dict, sd: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype, what: str):
    """``AutoencoderKL(config)`` with ``sd`` assigned once in dtype/device; ``config`` is a dict (never a name
    diffusers could look up on the hub) and the hub is off while diffusers runs."""
    from diffusers import AutoencoderKL

    with offline():
        return build_with_weights(lambda: AutoencoderKL.from_config(dict(config)), sd, device, dtype, what)


def _current_names(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out = dict(sd)
    for old, new in _OLD_ATTENTION_NAMES:
        out = {k.replace(old, new): v for k, v in out.items()}
    return out


def vae_folder_config(path: Path) -> dict | None:
    """The config of a diffusers-style VAE folder at ``path`` (read once), or None when it is not one."""
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return None
    config = read_json_object(cfg, "model config")
    return config if config.get("_class_name") == "AutoencoderKL" else None


def load_vae_from_folder(folder: str | os.PathLike, device: torch.device = CPU, dtype: torch.dtype = torch.float32,
                         config: dict | None = None):
    """Load a diffusers-style VAE folder; ``config`` is its config.json when the caller has read it already."""
    folder = Path(folder)
    what = f"VAE folder '{folder}'"
    if not folder.is_dir():
        raise ModelFileError(f"VAE not found: expected a folder at '{folder}'" + (" but it is a file" if folder.exists() else ""))
    if config is None:
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise ModelFileError(f"{what} has no config.json")
        config = read_json_object(cfg_path, what)
    return _assemble(config, _current_names(read_folder_state_dict(folder, what)), device, dtype, what)


def _config_from_weights(sd: Mapping[str, torch.Tensor], names: tuple[str, str, str, str], what: str) -> dict:
    level_re, layer_re, width_key, attention_key = names
    levels = 1 + max((int(m.group(1)) for k in sd if (m := re.match(level_re, k))), default=-1)
    layers = 1 + max((int(m.group(1)) for k in sd if (m := re.match(layer_re, k))), default=-1)
    config = {
        "in_channels": tensor_shape(sd, "encoder.conv_in.weight", 4, what)[1],
        "out_channels": tensor_shape(sd, "decoder.conv_out.weight", 4, what)[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [tensor_shape(sd, width_key.format(i), 4, what)[0] for i in range(levels)],
        "layers_per_block": layers,
        "latent_channels": tensor_shape(sd, "decoder.conv_in.weight", 4, what)[1],
        "norm_num_groups": LDM_NORM_GROUPS,
        "sample_size": SDXL_SAMPLE_SIZE,
        "scaling_factor": SDXL_SCALING_FACTOR,
    }
    if attention_key not in sd:
        config["mid_block_add_attention"] = False
    return config


def vae_config_from_ldm(sd: Mapping[str, torch.Tensor]) -> dict:
    """AutoencoderKL config read off LDM-named VAE weights (SDXL's scaling factor, sample size, 32 groups)."""
    return _config_from_weights(sd, _LDM_NAMES, "LDM VAE weights")


def load_vae_from_ldm_state_dict(sd: Mapping[str, torch.Tensor], device: torch.device = CPU,
                                 dtype: torch.dtype = torch.float32):
    """Load an LDM-named VAE (``encoder.down.0.block.0...``; a ComfyUI all-in-one file's ``vae.*`` with the
    prefix already stripped), converted to diffusers names by diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    what = "LDM VAE weights"
    for probe in ("encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight", "decoder.conv_out.weight"):
        if probe not in sd:
            raise ModelFileError(
                f"{what}: expected LDM key '{probe}'; found {len(sd)} tensors such as {', '.join(list(sd)[:4]) or 'none'}"
            )
    config = vae_config_from_ldm(sd)
    try:
        converted = convert_ldm_vae_checkpoint(dict(sd), config)
    except KeyError as exc:
        raise ModelFileError(f"{what}: incomplete VAE: expected a tensor {exc} that the file lacks") from None
    return _assemble(config, converted, device, dtype, what)


def is_diffusers_vae(sd: Mapping[str, torch.Tensor]) -> bool:
    """True for diffusers-named VAE weights (``encoder.down_blocks.*``) rather than LDM names."""
    return any(k.startswith("encoder.down_blocks.") for k in sd)


def load_vae_from_state_dict(sd: Mapping[str, torch.Tensor], device: torch.device = CPU,
                             dtype: torch.dtype = torch.float32):
    """A bare VAE weights file in LDM or diffusers names, each loaded in its own names."""
    if not is_diffusers_vae(sd):
        return load_vae_from_ldm_state_dict(sd, device, dtype)
    sd = _current_names(sd)
    what = "diffusers VAE weights"
    return _assemble(_config_from_weights(sd, _DIFFUSERS_NAMES, what), sd, device, dtype, what)
