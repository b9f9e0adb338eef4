"""DiT-only files as shared on model sites (``.safetensors``/``.pt``/``.bin``/``.ckpt``; official, diffusers or
``model.``/``model.diffusion_model.``-prefixed names, bare or wrapped by a training tool) and a diffusers
``transformer/`` folder on its own."""

from __future__ import annotations

from pathlib import Path

from .files import StateDict, unwrap_state_dict
from .kinds import DIT, describe_weights

# Keys wrapping a DiT's weights in a pickle (DeepSpeed {"module", "ema"}, Lightning, kohya), EMA first.
DIT_CONTAINERS = ("ema", "module", "state_dict", "model")


def dit_weights(checkpoint: object, variant: str | None, where: str) -> StateDict:
    """The DiT's tensors inside a file as stored; a weight ``variant`` naming a container (DeepSpeed's
    ``module``/``ema``) wins over the default order."""
    order = list(DIT_CONTAINERS)
    if variant in order:
        order.remove(variant)
        order.insert(0, variant)
    return unwrap_state_dict(checkpoint, tuple(order), where)


def describe(path: Path, checkpoint: object) -> str:
    """What a bare weights file (or folder) given as a model holds, as a noun phrase for errors: "a DiT-only
    file", "a VAE (SD/SDXL autoencoder)", ..."""
    if path.is_dir():
        return "a DiT-only folder (a diffusers transformer/)"
    keys = list(dit_weights(checkpoint, None, f"'{path}'"))
    kind = describe_weights(keys)
    if kind == DIT:
        return "a DiT-only file"
    return kind or f"a file of {len(keys)} tensors that match no known model (first: {', '.join(keys[:3])})"
