"""The upscale nodes: model picker and loading, IMAGE → IMAGE, ComfyUI's own UPSCALE_MODEL, progress per
tile and interruption through ComfyUI's hooks (a recording fake of its modules), and the workflow."""

from __future__ import annotations

import json

import pytest
import torch
from comfy_graph import check_ui_workflow, to_api_prompt, validate_prompt
from comfy_host import CORE_NODES, ROOT
from fake_comfyui import FakeComfyUI, InterruptProcessingException

from hunyuan_core.upscaler import Upscaler
from hunyuan_core.upscaler.tiny import make_tiny_upscaler
from nodes import host
from nodes.upscale import (
    NODE_CLASS_MAPPINGS,
    HunyuanDiTUpscale,
    HunyuanDiTUpscaleModelLoader,
)

WORKFLOW = ROOT / "workflows" / "hunyuan_dit_t2i_upscale.json"


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    root = tmp_path / "models"
    make_tiny_upscaler(root / "upscale_models" / "RealESRGAN_x4plus.pth", "RRDBNet", 4)
    make_tiny_upscaler(root / "upscale_models" / "compact" / "realesr-general-x2.safetensors", "SRVGGNetCompact", 2)
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(root))
    return root


@pytest.fixture()
def comfyui(tmp_path, models_dir, monkeypatch):
    fake = FakeComfyUI(tmp_path / "comfyui", models_dir)
    fake.modules["folder_paths"].folder_names_and_paths["upscale_models"] = (
        [str(models_dir / "upscale_models")], {".pth", ".safetensors"})
    fake.install(monkeypatch)
    return fake


def images(batch: int = 2, height: int = 20, width: int = 30, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(0))


def test_loader_lists_and_loads_upscale_models(models_dir):
    choices = HunyuanDiTUpscaleModelLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["RealESRGAN_x4plus.pth", "compact/realesr-general-x2.safetensors"]
    out = HunyuanDiTUpscaleModelLoader().load("compact/realesr-general-x2.safetensors", "auto")
    upscaler = out["result"][0]
    assert isinstance(upscaler, Upscaler) and upscaler.scale == 2 and upscaler.device.type == "cpu"
    assert out["ui"]["text"] == ["SRVGGNetCompact x2 (float32) from compact/realesr-general-x2.safetensors"]


def test_upscale_node_image_to_image(models_dir):
    upscaler = HunyuanDiTUpscaleModelLoader().load("RealESRGAN_x4plus.pth", "fp32")["result"][0]
    node = HunyuanDiTUpscale()
    (out,) = node.upscale(upscaler, images(), tile=512, overlap=32, scale=0.0)
    assert out.shape == (2, 80, 120, 3) and out.dtype == torch.float32
    (half,) = node.upscale(upscaler, images(channels=4), tile=64, overlap=8, scale=2.0)
    assert half.shape == (2, 40, 60, 4)


def test_progress_per_tile_and_interrupt_in_comfyui(comfyui):
    upscaler = HunyuanDiTUpscaleModelLoader().load("RealESRGAN_x4plus.pth", "auto")["result"][0]
    node = HunyuanDiTUpscale()
    node.upscale(upscaler, images(2, 70, 80), tile=64, overlap=16, scale=0.0)
    total = upscaler.count_tiles(2, 70, 80, 64, 16)
    assert total == 8
    assert ("ProgressBar", total) in comfyui.calls
    assert [c for c in comfyui.calls if c[0] == "progress"] == [("progress", i, total) for i in range(1, total + 1)]
    assert any(c[0] == "free_memory" for c in comfyui.calls)

    comfyui.interrupted = True
    with pytest.raises(InterruptProcessingException):
        node.upscale(upscaler, images(1, 100, 90), tile=64, overlap=16, scale=0.0)
    assert upscaler.device.type == "cpu"


def test_accepts_comfyuis_own_upscale_model(models_dir):
    spandrel = pytest.importorskip("spandrel")
    path = models_dir / "upscale_models" / "RealESRGAN_x4plus.pth"
    descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
    ours = HunyuanDiTUpscaleModelLoader().load("RealESRGAN_x4plus.pth", "fp32")["result"][0]
    node = HunyuanDiTUpscale()
    (theirs_out,) = node.upscale(descriptor, images(), tile=512, overlap=32, scale=0.0)
    (ours_out,) = node.upscale(ours, images(), tile=512, overlap=32, scale=0.0)
    torch.testing.assert_close(theirs_out, ours_out, atol=1e-5, rtol=1e-5)
    assert descriptor.dtype == torch.float32  # ComfyUI's object is left as ComfyUI made it


def test_workflow_matches_the_nodes(models_dir, monkeypatch):
    from nodes import collect_mappings

    (models_dir / "checkpoints").mkdir()
    (models_dir / "checkpoints" / "hunyuan_dit_1.2.safetensors").write_bytes(b"")
    mappings, _names, failures = collect_mappings()
    assert "upscale" not in failures
    mappings = {**mappings, **CORE_NODES}
    workflow = json.loads(WORKFLOW.read_text())
    assert check_ui_workflow(workflow, mappings) == []
    prompt = validate_prompt(to_api_prompt(workflow, mappings), mappings)
    upscale = next(n for n in prompt.values() if n["class_type"] == "HunyuanDiTUpscale")
    assert upscale["inputs"]["scale"] == 2.0
    assert set(NODE_CLASS_MAPPINGS) <= {n["class_type"] for n in prompt.values()}
