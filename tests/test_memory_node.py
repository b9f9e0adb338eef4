"""The pack's models under the real ComfyUI's model management (in this process, ``--cpu``; tests/comfy_host.py).

Observed through ComfyUI itself: its ``current_loaded_models`` list, the loads its ``ModelPatcher`` makes
(counted by wrapping ``ModelPatcher.load``), and its own eviction entry points (``unload_all_models``, what
``POST /free`` calls, and ``free_memory``, what loading another model calls). ``POST /free`` through the server
is tested in tests/test_workflows.py."""

from __future__ import annotations

import pytest
import torch
from comfy_host import require_comfyui
from comfy_host import run_node as call_node
from comfy_models import ALL_IN_ONE, LORA_KOHYA, UPSCALER

require_comfyui()

from hunyuan_core.offload import weight_bytes  # noqa: E402
from nodes import memory  # noqa: E402
from nodes.conditioning import HunyuanDiTTextEncode  # noqa: E402
from nodes.latent import HunyuanDiTVAEDecode  # noqa: E402
from nodes.loaders import HunyuanDiTCheckpointLoader  # noqa: E402
from nodes.lora import HunyuanDiTLoraLoader  # noqa: E402
from nodes.sampling import CUSTOM, HunyuanDiTSampler  # noqa: E402
from nodes.upscale import HunyuanDiTUpscale, HunyuanDiTUpscaleModelLoader  # noqa: E402

SETTINGS = dict(resolution=CUSTOM, width=64, height=64, steps=2, cfg=6.0, guidance_rescale=0.0,
                sampler_name="ddpm", seed=3, batch_size=1, denoise=1.0)


@pytest.fixture()
def mm(comfyui):
    """ComfyUI's model management, emptied before and after the test."""
    management = comfyui.modules["comfy.model_management"]
    management.unload_all_models()
    yield management
    management.unload_all_models()


@pytest.fixture()
def loads(mm, monkeypatch):
    """The classes of the models ComfyUI's ModelPatcher loads (or loads further), in order."""
    import comfy.model_patcher

    seen: list[str] = []
    real = comfy.model_patcher.ModelPatcher.load

    def counted(self, *args, **kwargs):
        seen.append(type(self.model).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "load", counted)
    return seen


@pytest.fixture()
def pack(comfyui):
    """Model, text encoder and VAE handles from the all-in-one file, loaded inside ComfyUI."""
    outputs, _ = call_node(HunyuanDiTCheckpointLoader, ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto")
    return outputs[:3]


def generate(model, text_encoder, vae, seed: int = SETTINGS["seed"]) -> torch.Tensor:
    """Prompt → latent → image through the three nodes."""
    (pos, neg), _ = call_node(HunyuanDiTTextEncode, text_encoder=text_encoder, positive="一只猫", negative="")
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SETTINGS, "seed": seed})
    (image,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
    return image


def ours(mm, pack) -> dict[str, object]:
    """The pack's models ComfyUI lists as loaded, by class, with the patcher ComfyUI holds for each."""
    model, text_encoder, vae = pack
    patchers = {getattr(obj, memory.PATCHER_ATTRIBUTE, None): obj for obj in (model.dit, text_encoder.encoder, vae.vae)}
    return {type(patchers[lm.model]).__name__: lm.model for lm in mm.current_loaded_models if lm.model in patchers}


def test_our_models_are_comfyui_loaded_models_and_stay_loaded_between_identical_runs(mm, loads, pack):
    model, text_encoder, vae = pack
    first = generate(*pack)
    listed = ours(mm, pack)
    assert sorted(listed) == ["AutoencoderKL", "BilingualTextEncoder", "HunyuanDiT"]
    assert sorted(loads) == sorted(listed)  # each loaded once, named after the model in ComfyUI's log
    for obj in (model.dit, text_encoder.encoder, vae.vae):
        patcher = listed[type(obj).__name__]
        assert patcher.load_device == mm.get_torch_device()
        assert patcher.model_size() == weight_bytes(obj) and patcher.loaded_size() == weight_bytes(obj)
    assert listed["HunyuanDiT"].offload_device == mm.unet_offload_device()
    assert listed["BilingualTextEncoder"].offload_device == mm.text_encoder_offload_device()
    assert listed["AutoencoderKL"].offload_device == mm.vae_offload_device()

    loads.clear()
    assert torch.equal(generate(*pack), first)
    assert loads == [] and ours(mm, pack) == listed  # the same patchers, nothing reloaded


def test_unload_all_models_unloads_ours_and_a_reload_gives_the_same_image(mm, loads, pack):
    first = generate(*pack)
    patchers = ours(mm, pack)
    mm.unload_all_models()  # what POST /free {"unload_models": true} runs
    assert ours(mm, pack) == {} and all(p.loaded_size() == 0 for p in patchers.values())

    loads.clear()
    assert torch.equal(generate(*pack), first)
    assert sorted(loads) == ["AutoencoderKL", "BilingualTextEncoder", "HunyuanDiT"]
    assert ours(mm, pack) == patchers  # made once per model, reused after the reload


def test_another_model_needing_room_unloads_ours_and_a_reload_gives_the_same_image(mm, loads, pack, monkeypatch):
    first = generate(*pack)
    patchers = ours(mm, pack)
    loaded = sum(p.loaded_size() for p in patchers.values())
    device = mm.get_torch_device()
    # A device whose memory is exactly what our models hold: free = that budget - what is loaded now.
    monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: (
        (lambda free: (free, free) if torch_free_too else free)(
            loaded - sum(lm.model_loaded_memory() for lm in mm.current_loaded_models))))
    dit_bytes = patchers["HunyuanDiT"].model_size()
    mm.free_memory(dit_bytes, device)  # what loading another model of the DiT's size asks for
    assert mm.get_free_memory(device) > dit_bytes
    assert sum(p.loaded_size() for p in patchers.values()) < loaded - dit_bytes

    loads.clear()
    assert torch.equal(generate(*pack), first)
    assert all(p.loaded_size() == p.model_size() for p in patchers.values())  # whole again
    assert "HunyuanDiT" in loads or "AutoencoderKL" in loads


def test_one_patcher_per_model_shared_by_every_handle_and_a_lora_merge_survives_unloading(mm, loads, pack):
    model, text_encoder, vae = pack
    base = generate(*pack)
    (with_lora, te_lora), _ = call_node(HunyuanDiTLoraLoader, model=model, text_encoder=text_encoder,
                                         lora_name=LORA_KOHYA, strength=0.8)
    styled = generate(with_lora, te_lora, vae)
    assert not torch.equal(styled, base)
    assert getattr(with_lora.dit, memory.PATCHER_ATTRIBUTE) is ours(mm, pack)["HunyuanDiT"]

    mm.unload_all_models()  # no weight backups: nothing is restored over the merged weights
    assert torch.equal(generate(with_lora, te_lora, vae), styled)
    assert torch.equal(generate(*pack), base)  # the base comes back exactly, on the reloaded model


def test_an_interrupted_run_leaves_the_dit_with_comfyui_and_the_next_run_matches(mm, loads, pack, monkeypatch):
    import comfy.utils

    first = generate(*pack)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        mm.interrupt_current_processing(True))
    with pytest.raises(mm.InterruptProcessingException):
        generate(*pack, seed=4)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", None)
    assert "HunyuanDiT" in ours(mm, pack) and not mm.processing_interrupted()
    loads.clear()
    assert torch.equal(generate(*pack), first) and loads == []


def test_upscalers_are_comfyui_loaded_models_with_room_for_their_tiles(mm, loads, monkeypatch):
    (upscaler,), _ = call_node(HunyuanDiTUpscaleModelLoader, model_name=UPSCALER.split("/", 1)[1], dtype="auto")
    asked = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kwargs: (asked.append(kwargs), real(models, **kwargs)))
    image = torch.rand(1, 24, 24, 3)
    for _ in range(2):
        call_node(HunyuanDiTUpscale, upscale_model=upscaler, image=image, tile=16, overlap=4, scale=0.0)
    assert asked[0]["memory_required"] == upscaler.memory_estimate(16)
    patcher = getattr(upscaler.model, memory.PATCHER_ATTRIBUTE)
    assert patcher in [lm.model for lm in mm.current_loaded_models] and loads == ["RRDBNet"]


def test_comfyui_makes_room_for_the_work_as_well_as_the_weights(mm, pack, monkeypatch):
    """Now that ComfyUI keeps our models loaded, each node asks it for room for its activations too (the
    sampler: one step of the DiT; the VAE: ComfyUI's own SDXL-VAE rule, comfy/sd.py), so it evicts e.g. the
    text encoders before sampling and the DiT before a large decode."""
    from hunyuan_core.settings.validate import dit_activation_bytes
    from nodes.latent import HunyuanDiTVAEEncode

    model, text_encoder, vae = pack
    asked = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kwargs: (
        asked.append((type(models[0].model).__name__, kwargs["memory_required"])), real(models, **kwargs)))
    generate(*pack)
    (pos, neg), _ = call_node(HunyuanDiTTextEncode, text_encoder=text_encoder, positive="一只猫", negative="")
    call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SETTINGS, "cfg": 1.0, "batch_size": 3})
    big = {"samples": torch.zeros(2, 4, 160, 96)}
    call_node(HunyuanDiTVAEDecode, samples=big, vae=vae, tiled=False)
    call_node(HunyuanDiTVAEDecode, samples=big, vae=vae, tiled=True)
    call_node(HunyuanDiTVAEEncode, image=torch.rand(1, 48, 40, 3), vae=vae)

    element = vae.vae.dtype.itemsize
    dit = lambda rows: dit_activation_bytes(model.dit.config, model.dit.dtype, 64, 64, rows)  # noqa: E731
    assert asked == [
        ("BilingualTextEncoder", 0), ("HunyuanDiT", dit(2)), ("AutoencoderKL", 8 * 8 * 2178 * 64 * element),
        ("BilingualTextEncoder", 0), ("HunyuanDiT", dit(3)),  # no guidance at cfg 1: one row per image
        ("AutoencoderKL", 2 * 160 * 96 * 2178 * 64 * element),
        ("AutoencoderKL", 2 * 64 * 64 * 2178 * 64 * element),  # tiled: one 64-latent window at a time
        ("AutoencoderKL", 48 * 32 * 1767 * element),  # encode: the image cropped to multiples of 16
    ]


def test_models_used_together_load_in_one_call_and_a_model_that_gained_weights_gets_a_new_patcher(mm, pack,
                                                                                                monkeypatch):
    """What the ControlNet / IP-Adapter nodes need: a DiT and its ControlNets loaded by one ``load_models_gpu``
    (so loading one cannot evict the other), and a DiT whose modules changed (an attached IP-Adapter) handed to
    ComfyUI anew, since ComfyUI would not move what an already loaded model gained."""
    model = pack[0]
    control = torch.nn.Linear(8, 8)
    calls = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kwargs: (calls.append(len(models)), real(models, **kwargs)))
    offload = mm.unet_offload_device()
    with memory.on_compute_device(model.dit, control, offload_device=offload) as device:
        assert device == mm.get_torch_device()
    before = getattr(model.dit, memory.PATCHER_ATTRIBUTE)
    assert calls == [2] and {before, getattr(control, memory.PATCHER_ATTRIBUTE)} <= {
        lm.model for lm in mm.current_loaded_models}

    model.dit.attached = torch.nn.Linear(8, 8)  # stands in for IP-Adapter modules added to the DiT
    with memory.on_compute_device(model.dit, offload_device=offload):
        pass
    after = getattr(model.dit, memory.PATCHER_ATTRIBUTE)
    assert after is not before and after.model_size() == weight_bytes(model.dit)
    listed = [lm.model for lm in mm.current_loaded_models]
    assert after in listed and before not in listed and after.loaded_size() == weight_bytes(model.dit)
