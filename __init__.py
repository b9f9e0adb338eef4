"""ComfyUI entry point of the HunyuanDiT node pack (this folder is cloned into ``ComfyUI/custom_nodes/``).

ComfyUI imports this file by path, so the pack's own ``hunyuan_core`` package is made importable by
appending this folder to ``sys.path`` (appended, so nothing ComfyUI already imports is shadowed; the
``nodes`` package is only ever imported relatively, because ComfyUI has its own top-level ``nodes``).
The nodes use ComfyUI's V3 node API (``comfy_api.v0_0_2``, ComfyUI >= ``requires-comfyui`` in
pyproject.toml) and ComfyUI finds them through :func:`comfy_entrypoint`. Importing the package outside
ComfyUI (scripts, tests), or inside a ComfyUI too old for that API, never fails: there is then nothing to
register, and inside ComfyUI a warning says why.
"""

import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

try:
    import comfy_api.v0_0_2  # noqa: F401  (the node API version the pack is written against)
except ImportError:
    if "comfy" in sys.modules:  # inside a ComfyUI older than the V3 node API
        logging.getLogger("hunyuan_dit").warning(
            "HunyuanDiT: this ComfyUI has no comfy_api.v0_0_2 (the V3 node API); update ComfyUI to load the nodes"
        )
else:
    if __package__:  # imported as a package, as ComfyUI does (a plain module has nothing to register)
        from .nodes import comfy_entrypoint  # noqa: F401
