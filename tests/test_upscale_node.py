"""The upscale nodes: model picker and loading, IMAGE → IMAGE, ComfyUI's own UPSCALE_MODEL, progress per
tile and interruption through the real ComfyUI's hooks (in this process), and the workflow's widgets as
the real server reads them (the workflow itself runs in tests/test_workflows.py)."""

from __future__ import annotations

import json

import pytest
import torch
from comfy_host import WORKFLOW_DIR, require_comfyui, run_node, to_api_prompt

require_comfyui()

from hunyuan_core.upscaler import Upscaler  # noqa: E402
from hunyuan_core.upscaler.tiny import make_tiny_upscaler  # noqa: E402
from nodes import host  # noqa: E402
from nodes.upscale import NODES, HunyuanDiTUpscale, HunyuanDiTUpscaleModelLoader  # noqa: E402

WORKFLOW = WORKFLOW_DIR / "Hunyuan-DiT - text to image, then upscale.json"


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    root = tmp_path / "models"
    make_tiny_upscaler(root / "upscale_models" / "RealESRGAN_x4plus.pth", "RRDBNet", 4)
    make_tiny_upscaler(root / "upscale_models" / "compact" / "realesr-general-x2.safetensors", "SRVGGNetCompact", 2)
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(root))
    return root


def load(model_name: str, dtype: str) -> tuple[Upscaler, dict]:
    (upscaler,), ui = run_node(HunyuanDiTUpscaleModelLoader, model_name=model_name, dtype=dtype)
    return upscaler, ui


def upscale(model, image: torch.Tensor, **options) -> torch.Tensor:
    return run_node(HunyuanDiTUpscale, upscale_model=model, image=image, **options)[0][0]


def images(batch: int = 2, height: int = 20, width: int = 30, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(0))


def test_loader_lists_and_loads_upscale_models(models_dir):
    choices = HunyuanDiTUpscaleModelLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    assert choices == ["RealESRGAN_x4plus.pth", "compact/realesr-general-x2.safetensors"]
    upscaler, ui = load("compact/realesr-general-x2.safetensors", "auto")
    assert isinstance(upscaler, Upscaler) and upscaler.scale == 2 and upscaler.device.type == "cpu"
    assert ui["text"] == ["SRVGGNetCompact x2 (float32) from compact/realesr-general-x2.safetensors"]


def test_upscale_node_image_to_image(models_dir):
    upscaler, _ = load("RealESRGAN_x4plus.pth", "fp32")
    out = upscale(upscaler, images(), tile=512, overlap=32, scale=0.0)
    assert out.shape == (2, 80, 120, 3) and out.dtype == torch.float32
    half = upscale(upscaler, images(channels=4), tile=64, overlap=8, scale=2.0)
    assert half.shape == (2, 40, 60, 4)


def test_progress_per_tile_and_interrupt_in_comfyui(comfyui, monkeypatch):
    import comfy.utils

    mm = comfyui.modules["comfy.model_management"]
    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append(("progress", value, total)))
    real_load = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kwargs: (
        calls.append(("load_models_gpu", kwargs["memory_required"])), real_load(models, **kwargs)))
    upscaler, _ = load("RealESRGAN_x4plus.pth", "auto")  # from ComfyUI's models/upscale_models
    upscale(upscaler, images(2, 70, 80), tile=64, overlap=16, scale=0.0)
    total = upscaler.count_tiles(2, 70, 80, 64, 16)
    assert total == 8
    assert [c for c in calls if c[0] == "progress"] == [("progress", i, total) for i in range(1, total + 1)]
    assert ("load_models_gpu", upscaler.memory_estimate(64)) in calls  # room for the weights and one tile

    mm.interrupt_current_processing(True)  # what POST /interrupt does
    with pytest.raises(mm.InterruptProcessingException):
        upscale(upscaler, images(1, 100, 90), tile=64, overlap=16, scale=0.0)
    assert upscaler.device.type == "cpu" and not mm.processing_interrupted()


def test_accepts_comfyuis_own_upscale_model(models_dir):
    spandrel = pytest.importorskip("spandrel")
    path = models_dir / "upscale_models" / "RealESRGAN_x4plus.pth"
    descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
    ours, _ = load("RealESRGAN_x4plus.pth", "fp32")
    theirs_out = upscale(descriptor, images(), tile=512, overlap=32, scale=0.0)
    ours_out = upscale(ours, images(), tile=512, overlap=32, scale=0.0)
    torch.testing.assert_close(theirs_out, ours_out, atol=1e-5, rtol=1e-5)
    assert descriptor.dtype == torch.float32  # ComfyUI's object is left as ComfyUI made it


def test_workflow_uses_both_upscale_nodes_at_scale_2(comfyui_server):
    prompt = to_api_prompt(json.loads(WORKFLOW.read_text()), comfyui_server.object_info)
    upscale_node = next(n for n in prompt.values() if n["class_type"] == "HunyuanDiTUpscale")
    assert upscale_node["inputs"]["scale"] == 2.0
    assert {cls.GET_SCHEMA().node_id for cls in NODES} <= {n["class_type"] for n in prompt.values()}
