"""ComfyUI entry point of the HunyuanDiT node pack (this folder is cloned into ``ComfyUI/custom_nodes/``).

ComfyUI imports this file by path, so the pack's own ``hunyuan_core`` package is made importable by
appending this folder to ``sys.path`` (appended, so nothing ComfyUI already imports is shadowed; the
``nodes`` package is only ever imported relatively, because ComfyUI has its own top-level ``nodes``).
Importing the package outside ComfyUI works too: node modules need ComfyUI only while they run, and a
module that fails to import is logged and skipped instead of failing the whole pack.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

try:
    from .nodes import collect_mappings
except ImportError:  # imported as a plain module (no parent package): nothing to register
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
    IMPORT_FAILURES: dict = {}
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, IMPORT_FAILURES = collect_mappings()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
