"""The real ComfyUI (from ``$COMFYUI_DIR``) for the node tests: in this process, and as a server.

In process, ComfyUI is imported the way its ``main.py`` sets it up (CPU mode, a base directory whose
``models/`` and ``input/`` are the tiny test folders), once per session. Node modules need its V3 node API
(``comfy_api``) to be defined at all, so test modules that import them call :func:`require_comfyui` first:
without ``$COMFYUI_DIR`` they are skipped with that reason.

The pack decides whether it runs inside ComfyUI by whether ComfyUI's ``comfy.model_management`` and
``folder_paths`` are imported (``nodes/host.py``). So that the same process can also test the pack
outside ComfyUI (scripts, the ``$HUNYUAN_MODELS_DIR`` fallback), those two modules are imported once and
then kept out of ``sys.modules``; the ``comfyui`` fixture (tests/conftest.py) puts the real modules back
for one test.

ComfyUI's own ``nodes.py`` and ``server.py`` are never imported in this process: ComfyUI's ``nodes`` module
has the name of the pack's ``nodes`` package. Everything they do (validating prompts, executing graphs,
caching, the ``ui`` outputs of nodes) is tested through the real server (:func:`start_server`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"  # one of the folders ComfyUI serves a pack's templates from
if str(ROOT) not in sys.path:  # the pack's `nodes` package lives at the repository root
    sys.path.insert(0, str(ROOT))

COMFYUI_DIR_ENV = "COMFYUI_DIR"
NO_COMFYUI = f"set {COMFYUI_DIR_ENV} to a ComfyUI >= 0.3.64 source tree to test the node pack in its host"
HOST_MODULES = ("comfy.model_management", "folder_paths")  # what makes nodes/host.py see ComfyUI


def comfyui_dir() -> Path | None:
    """``$COMFYUI_DIR``, or None when unset."""
    value = os.environ.get(COMFYUI_DIR_ENV)
    return Path(value) if value else None


def require_comfyui() -> "ComfyUIProcess":
    """Skip the calling test module unless ComfyUI is available; else import it (once) and return it."""
    if comfyui_dir() is None:
        pytest.skip(NO_COMFYUI, allow_module_level=True)
    return comfyui_in_process()


@dataclass(frozen=True)
class ComfyUIProcess:
    """ComfyUI imported into this process: its base directory and the modules the pack talks to."""

    base: Path
    modules: dict[str, ModuleType]


@lru_cache(maxsize=1)
def comfyui_in_process() -> ComfyUIProcess:
    """Import ComfyUI as ``main.py --cpu --base-directory <tmp>`` would, with the tiny models; see the module doc."""
    from comfy_models import tiny_models

    folders = tiny_models()
    base = Path(tempfile.mkdtemp(prefix="comfyui_base_"))
    (base / "models").symlink_to(folders.models, target_is_directory=True)
    (base / "input").symlink_to(folders.input, target_is_directory=True)
    (base / "user").mkdir()
    sys.path.append(str(comfyui_dir()))  # after the repository root: `nodes` stays the pack's package
    from comfy.cli_args import args

    args.cpu = True
    args.base_directory = str(base)
    import comfy.model_management
    import comfy_api.v0_0_2  # noqa: F401
    import folder_paths
    import latent_preview  # noqa: F401

    modules = {"comfy.model_management": comfy.model_management, "folder_paths": folder_paths}
    for name in HOST_MODULES:
        del sys.modules[name]
    return ComfyUIProcess(base, modules)


def run_node(cls: type, unique_id: str = "1", **inputs: Any) -> tuple[tuple, dict]:
    """Run one V3 node as ComfyUI's executor does (a class clone carrying the hidden inputs, the normalised
    ``execute``, inference mode); returns ``(outputs, ui)``."""
    from comfy_api.v0_0_2 import io

    node = cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: unique_id})
    with torch.inference_mode():
        output = node.EXECUTE_NORMALIZED(**inputs)
    return tuple(output.args), dict(output.ui or {})


# ----------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (or POST ``body`` as JSON) and the JSON answer, also for error statuses."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@dataclass
class ComfyUIServer:
    """A running ComfyUI server with this pack as its only custom node pack."""

    url: str
    base: Path
    object_info: dict

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt; ``(status, reply)`` (400 with ``node_errors`` when validation fails)."""
        return http(f"{self.url}/prompt", {"prompt": prompt})

    def run(self, prompt: dict) -> dict:
        """Queue ``prompt`` and wait for its history entry (outputs, status with its messages)."""
        status, reply = self.queue(prompt)
        assert status == 200 and reply["node_errors"] == {}, reply
        deadline = time.time() + 300
        while time.time() < deadline:
            history = http(f"{self.url}/history/{reply['prompt_id']}")[1]
            entry = history.get(reply["prompt_id"])
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            time.sleep(0.2)
        pytest.fail(f"prompt {reply['prompt_id']} did not finish")


def start_server(models: Path, inputs: Path, base: Path) -> tuple[subprocess.Popen, ComfyUIServer]:
    """Start ComfyUI from ``$COMFYUI_DIR`` on 127.0.0.1 (``--cpu``) with the pack in ``base/custom_nodes``;
    run by ``$COMFYUI_PYTHON`` when ComfyUI has its own environment (default: this interpreter)."""
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "hunyuan_dit").symlink_to(ROOT, target_is_directory=True)
    (base / "models").symlink_to(models, target_is_directory=True)
    (base / "input").symlink_to(inputs, target_is_directory=True)
    port = _free_port()
    log = open(base / "comfyui.log", "w")
    process = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
         "--port", str(port), "--base-directory", str(base), "--disable-auto-launch"],
        cwd=comfyui_dir(), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            if http(f"{url}/object_info/HunyuanDiTSampler")[1]:
                break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        if process.poll() is not None or time.time() > deadline:
            process.terminate()
            pytest.fail(f"ComfyUI did not start with the pack: {(base / 'comfyui.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return process, ComfyUIServer(url, base, http(f"{url}/object_info")[1])


# ------------------------------------------------------------------------- UI workflow -> API prompt
CONTROL_AFTER_GENERATE = ("fixed", "increment", "decrement", "randomize")


def to_api_prompt(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API-format prompt of a UI-format workflow, as the frontend's "Export (API)" builds it.

    This is the one piece of ComfyUI that runs in the browser, so it is re-done here: widget values are
    taken in the order of the server's ``input_order`` (required, then optional), skipping the extra value a
    ``control_after_generate`` widget stores; links become ``[node id, output slot]``.
    """
    links = {link[0]: link for link in workflow["links"]}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        linked = {inp["name"] for inp in node.get("inputs", []) if inp.get("link") is not None}
        for category in ("required", "optional"):
            for name in info["input_order"].get(category, []):
                type_, options = (info["input"][category][name] + [{}])[:2]
                is_widget = isinstance(type_, list) or type_ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
                if not is_widget or options.get("forceInput"):
                    continue
                if not values:
                    break
                value = values.pop(0)
                if values and (options.get("control_after_generate") or options.get("image_upload")) \
                        and values[0] in (*CONTROL_AFTER_GENERATE, "image"):
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, src_slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
