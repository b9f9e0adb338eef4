"""ComfyUI node wrappers: thin adapters from ComfyUI types and host services to `hunyuan_core` calls.

Each ``nodes/<topic>.py`` exports ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``;
:func:`collect_mappings` gathers them so that one module that fails to import (a missing optional
dependency) costs only its own nodes, never the whole pack.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

_NOT_NODE_MODULES = {"host"}


def collect_mappings() -> tuple[dict[str, type], dict[str, str], dict[str, str]]:
    """Import every node module of this package and merge their mappings.

    Returns ``(class_mappings, display_name_mappings, failures)``; ``failures`` maps a module name to
    the error that kept it from loading (also logged with its traceback).
    """
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
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
        classes.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
        names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return classes, names, failures
