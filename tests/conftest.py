"""Session fixtures: tiny random models in every real file layout, built once per test session.

All layouts of one version share the same seeded weights (``hunyuan_core.tiny.make_tiny``), so tests can
demand identical outputs across layouts. The hub is switched off for the whole session: nothing may be
downloaded.
"""

import os

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
