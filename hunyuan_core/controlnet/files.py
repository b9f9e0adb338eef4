"""ControlNet files: the official ``pytorch_model_{canny,depth,pose}_distill.pt`` (v1.1 and v1.2) and community
files in official names (``.pt``/``.safetensors``, bare or wrapped by DeepSpeed), diffusers
``HunyuanDiT2DControlNetModel`` folders and files; reading (``load_controlnet``) and writing (tests, tiny models).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import InputError, ModelFileError, OutputError
from ..formats.dit_only import DIT_CONTAINERS
from ..formats.files import StateDict, read_folder_state_dict, read_state_dict, reading
from ..formats.keys import official_to_diffusers, to_official
from ..formats.writing import save_pickle, save_safetensors, write_json
from ..model.config import DiTConfig
from ..model.materialise import build_with_weights
from ..settings.devices import resolve_device, resolve_dtype
from .model import ControlNet

# Layouts :func:`save_controlnet` writes: official names as a pickle or safetensors, diffusers names as a
# folder (config.json + weights) or a single file.
LAYOUTS = ("official", "safetensors", "diffusers", "diffusers_file")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def read_controlnet_weights(path: Path) -> StateDict:
    """The tensors of a ControlNet file or diffusers folder, renamed to official names."""
    if not path.exists():
        raise ModelFileError(f"ControlNet not found: '{path}' does not exist")
    if path.is_dir():
        sd = read_folder_state_dict(path, "ControlNet folder")
    else:
        sd = read_state_dict(path, DIT_CONTAINERS, "ControlNet file")
    return to_official(sd)


def load_controlnet(path: str | os.PathLike | Mapping[str, torch.Tensor], device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None) -> ControlNet:
    """Load a Hunyuan-DiT ControlNet from any of its formats (or a state dict); the architecture and release
    (``cn.version``) are read off the weights. It must then be used with a DiT of the same release
    (:func:`~hunyuan_core.controlnet.model.check_controlnet`)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if isinstance(path, Mapping):
        sd, where = to_official(path), "ControlNet state dict"
    else:
        path = Path(path).expanduser()
        where = f"ControlNet '{path}'"
        with reading(path, "ControlNet"):
            sd = read_controlnet_weights(path)
    config = DiTConfig.from_controlnet_state_dict(sd, where)
    return build_with_weights(lambda: ControlNet(config), sd, device, dtype, where, warn_unexpected=True)


def diffusers_config(config: DiTConfig) -> dict:
    """``config.json`` of a diffusers ``HunyuanDiT2DControlNetModel`` for the DiT ``config`` describes."""
    import diffusers

    return {
        "_class_name": "HunyuanDiT2DControlNetModel", "_diffusers_version": diffusers.__version__,
        "conditioning_channels": 3, "num_attention_heads": config.num_heads, "attention_head_dim": config.head_dim,
        "in_channels": config.in_channels, "patch_size": config.patch_size, "activation_fn": "gelu-approximate",
        "sample_size": 128, "hidden_size": config.hidden_size, "transformer_num_layers": config.depth,
        "mlp_ratio": config.mlp_hidden / config.hidden_size, "cross_attention_dim": config.text_dim,
        "cross_attention_dim_t5": config.t5_dim, "pooled_projection_dim": config.pooled_dim,
        "text_len": config.text_len, "text_len_t5": config.t5_len,
        "use_style_cond_and_image_meta_size": config.size_cond,
    }


def save_controlnet(controlnet: ControlNet, dest: str | os.PathLike, layout: str = "official",
                    overwrite: bool = False) -> Path:
    """Write ``controlnet`` in ``layout`` (see :data:`LAYOUTS`) at ``dest`` (a file; a folder for
    ``diffusers``) and return the path to load. An existing ``dest`` is replaced only with ``overwrite``."""
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    dest = Path(dest).expanduser()
    if dest.exists() and not overwrite:
        raise OutputError(f"output '{dest}' already exists; not replacing it (pass overwrite=True or a new path)")
    sd = {k: v.detach().cpu() for k, v in controlnet.state_dict().items()}
    if layout == "official":
        save_pickle(sd, dest)
    elif layout == "safetensors":
        save_safetensors(sd, dest)
    elif layout == "diffusers":
        write_json(dest / "config.json", diffusers_config(controlnet.config))
        save_safetensors(official_to_diffusers(sd), dest / DIFFUSERS_WEIGHTS)
    else:
        save_safetensors(official_to_diffusers(sd), dest)
    return dest
