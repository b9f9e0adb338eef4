"""ComfyUI node wrappers on the V3 node API: thin adapters from ComfyUI types and host services to `hunyuan_core`.

Each ``nodes/<topic>.py`` lists its node classes in ``NODES``; :class:`HunyuanDiTExtension` gathers them so
that one module that fails to import (a missing optional dependency) costs only its own nodes, never the
whole pack. ComfyUI finds the extension through :func:`comfy_entrypoint` (re-exported by the pack root).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

from comfy_api.v0_0_2 import ComfyExtension, io

_NOT_NODE_MODULES = {"host", "memory"}


def collect_nodes() -> tuple[list[type[io.ComfyNode]], dict[str, str]]:
    """Import every node module of this package and gather their ``NODES``.

    Returns ``(node_classes, failures)``; ``failures`` maps a module name to the error that kept it from
    loading (also logged with its traceback).
    """
    classes: list[type[io.ComfyNode]] = []
    failures: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_NODE_MODULES or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # one broken module must not take the pack down
            logging.getLogger("hunyuan_dit").warning(
                "HunyuanDiT: nodes/%s.py could not be imported; its nodes are missing", info.name, exc_info=True
            )
            failures[info.name] = f"{type(exc).__name__}: {exc}"
            continue
        classes += module.NODES
    return classes, failures


class HunyuanDiTExtension(ComfyExtension):
    """The node pack as a ComfyUI extension."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return collect_nodes()[0]


async def comfy_entrypoint() -> HunyuanDiTExtension:
    """Called by ComfyUI when it loads the pack."""
    return HunyuanDiTExtension()
