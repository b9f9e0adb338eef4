"""Session fixtures: tiny random models in every real file layout, built once per test session.

All layouts of one version share the same seeded weights (``hunyuan_core.tiny.make_tiny``), so tests can
demand identical outputs across layouts. The hub is switched off for the whole session: nothing may be
downloaded.
"""

import copy
import os
import sys
import types

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

from hunyuan_core.tiny import make_tiny, tiny_bert_vocab_path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_official(tmp_path_factory):
    """Official ``ckpts`` root of a tiny v1.2 model."""
    return make_tiny(tmp_path_factory.mktemp("tiny_official"), layout="official", version="1.2")


@pytest.fixture(scope="session")
def tiny_official_v11(tmp_path_factory):
    """Official ``ckpts`` root of a tiny v1.1 model (size and style conditioning)."""
    return make_tiny(tmp_path_factory.mktemp("tiny_official_v11"), layout="official", version="1.1")


@pytest.fixture(scope="session")
def tiny_diffusers(tmp_path_factory):
    """Diffusers folder of the tiny v1.2 model (same weights as ``tiny_official``)."""
    return make_tiny(tmp_path_factory.mktemp("tiny_diffusers"), layout="diffusers", version="1.2")


@pytest.fixture(scope="session")
def tiny_comfy(tmp_path_factory):
    """ComfyUI all-in-one ``.safetensors`` of the tiny v1.2 model (same weights, stored fp16)."""
    return make_tiny(tmp_path_factory.mktemp("tiny_comfy"), layout="comfy", version="1.2")


@pytest.fixture(scope="session")
def tiny_bert_vocab(tiny_comfy):
    """The BERT vocab.txt written beside ``tiny_comfy`` (the all-in-one file carries none)."""
    return tiny_bert_vocab_path(tiny_comfy.parent)


@pytest.fixture(scope="module")
def base_dit(tiny_official):
    """The tiny v1.2 DiT in fp32, loaded once per test module (from its file: LoRA restores read it back)."""
    import hunyuan_core as hy

    return hy.load_dit(tiny_official, device="cpu", dtype="fp32")


@pytest.fixture()
def dit(base_dit):
    """A private copy of ``base_dit`` that a test may change."""
    return copy.deepcopy(base_dit)


# ------------------------------------------------------------------------------- the real ComfyUI
@pytest.fixture()
def comfyui(monkeypatch):
    """The pack inside ComfyUI for one test: the real ``comfy.model_management`` and ``folder_paths`` of the
    in-process ComfyUI (tests/comfy_host.py) are where the pack looks for them; skipped without $COMFYUI_DIR."""
    from comfy_host import comfyui_dir, comfyui_in_process

    if comfyui_dir() is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI >= 0.3.64 source tree to test the node pack in its host")
    process = comfyui_in_process()
    for name, module in process.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    from nodes import host

    for key in ("hunyuan", "LLM", "ipadapter"):  # the pack's own folder keys (registered at import otherwise)
        host.register_model_folder(key, key)
    return process


@pytest.fixture()
def node_texts(monkeypatch):
    """Texts the nodes show through ``PromptServer.instance.send_progress_text`` as ``(node_id, text)``.

    A stand-in for ComfyUI's ``server`` module, which cannot be imported into the test process (see
    tests/comfy_host.py); the server tests check the same texts in the nodes' ``ui`` outputs."""
    texts: list[tuple[str, str]] = []

    class PromptServer:
        def send_progress_text(self, text, node_id, sid=None):
            texts.append((str(node_id), text))

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    return texts


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory):
    """One real ComfyUI server for the session, on the tiny models; skipped without $COMFYUI_DIR."""
    from comfy_host import comfyui_dir, start_server
    from comfy_models import tiny_models

    if comfyui_dir() is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI >= 0.3.64 source tree to run workflows in a real ComfyUI")
    folders = tiny_models()
    process, server = start_server(folders.models, folders.input, tmp_path_factory.mktemp("comfyui_server"))
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=60)
