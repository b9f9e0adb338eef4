"""Low-memory modes, device map and fp8 storage on the tiny model (CPU): the offload modes must give the default
mode's images bit for bit and move what the residency log says, in the order it says."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from lora_files import write_kohya
from PIL import Image
from safetensors.torch import load_file, save_file

import hunyuan_core as hy
from hunyuan_core.errors import InputError
from hunyuan_core.formats.convert import save_pipeline
from hunyuan_core.model.fp8 import WEIGHT_DTYPES, FP8Linear, dequantise_scaled_fp8, store_fp8
from hunyuan_core.model.vae import decode_bytes, decode_needs_tiles
from hunyuan_core.offload import weight_bytes
from hunyuan_core.placement import resolve_devices
from hunyuan_core.tiny import make_tiny_ip_adapter, tiny_controlnet

RUN = dict(width=64, height=64, steps=3, seed=3, guidance_scale=5.0)
PROMPT = "一只戴着墨镜的柴犬 a shiba inu"


@pytest.fixture(scope="module")
def reference(tiny_official):
    pipe = hy.load_pipeline(tiny_official, device="cpu")
    return pipe(PROMPT, **RUN)


def _same_images(a, b) -> bool:
    return torch.equal(a.latents, b.latents) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))


def test_model_offload_moves_one_component_per_stage_and_gives_the_same_images(tiny_official, reference):
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload="model")
    out = pipe(PROMPT, **RUN)
    assert _same_images(out, reference)
    image = out.images[0]
    pipe(PROMPT, image=image, strength=0.5, **RUN)  # img2img: the VAE visits to encode too
    log = pipe.placement.residency["cpu"]
    stages = ["text_encoder", "dit", "vae"]
    visits = [u for stage in stages for u in (("arrive", stage), ("leave", stage))]
    img2img = visits[:2] + [("arrive", "vae"), ("leave", "vae")] + visits[2:]
    assert log.events == visits + img2img
    assert log.resident == {} and log.peak_units in (["text_encoder"], ["dit"], ["vae"])


@pytest.mark.parametrize("resident", [1, 3])
def test_blocks_stream_in_order_never_more_than_resident_and_give_the_same_images(tiny_official, reference, resident):
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload="blocks", resident_blocks=resident)
    log = pipe.placement.residency["cpu"]
    seen = []  # what was resident whenever a DiT block started computing (hooks run after the stream's own)
    for i, block in enumerate(pipe.dit.blocks):
        block.register_forward_pre_hook(lambda m, a, i=i: seen.append((i, sorted(log.resident))))
    assert _same_images(pipe(PROMPT, **RUN), reference)
    depth = len(pipe.dit.blocks)
    assert [i for i, _ in seen] == list(range(depth)) * RUN["steps"]
    for i, units in seen:
        assert "dit" in units and f"dit.blocks.{i}" in units and "text_encoder" not in units
        assert sum(u.startswith("dit.blocks.") for u in units) <= resident
    assert log.most_resident("dit.blocks.") == resident
    assert log.most_resident("text_encoder.encoder.block.") == min(resident, len(pipe.text_encoder.mt5.encoder.block))
    assert log.events[0] == ("arrive", "text_encoder") and log.resident == {}
    arrivals = [u for op, u in log.events if op == "arrive" and u.startswith("dit.blocks.")]
    assert arrivals[:depth] == [f"dit.blocks.{i}" for i in range(depth)]  # text K/V: every block once, in order


def test_an_error_in_a_stage_leaves_everything_at_rest(tiny_official):
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload="blocks")

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe(PROMPT, cancel=stop, **RUN)
    assert pipe.placement.residency["cpu"].resident == {}
    assert all(not w.visiting for s in pipe.placement._visitors["dit"].streams for w in s.weights)


def test_diffusers_style_methods_and_to_switch_modes(tiny_official, reference):
    pipe = hy.load_pipeline(tiny_official, device="cpu")
    pipe.enable_sequential_cpu_offload("cpu", resident_blocks=1)
    assert pipe.placement.offload == "blocks" and _same_images(pipe(PROMPT, **RUN), reference)
    pipe.enable_model_cpu_offload("cpu")
    assert pipe.placement.offload == "model" and _same_images(pipe(PROMPT, **RUN), reference)
    pipe.to("cpu")
    assert pipe.placement.offload is None and _same_images(pipe(PROMPT, **RUN), reference)
    assert all(len(b._forward_pre_hooks) == 0 for b in pipe.dit.blocks)  # the streams' hooks are gone


def test_loras_merge_into_the_resting_weights(tiny_official, tmp_path):
    base = hy.load_pipeline(tiny_official, device="cpu")
    path = write_kohya(tmp_path / "k.safetensors", base.dit, text_encoder=base.text_encoder.bert)[0]
    base.set_loras([(path, 0.7)])
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload="blocks")
    pipe.set_loras([(path, 0.7)])
    assert _same_images(pipe(PROMPT, **RUN), base(PROMPT, **RUN))


def test_device_map_places_each_component_and_matches(tiny_official, reference):
    devices = {"text_encoder": "cpu", "dit": "cpu", "vae": "cpu"}
    pipe = hy.load_pipeline(tiny_official, device_map=devices, offload="model")
    assert {k: str(v) for k, v in pipe.placement.devices.items()} == devices
    assert _same_images(pipe(PROMPT, **RUN), reference)
    assert resolve_devices("cpu", {"vae": "cpu"}) == dict.fromkeys(("text_encoder", "dit", "vae"), torch.device("cpu"))
    with pytest.raises(InputError, match="unknown components"):
        resolve_devices("cpu", {"unet": "cpu"})
    with pytest.raises(InputError, match="not available"):
        resolve_devices("cpu", {"dit": "cuda:7"})
    with pytest.raises(InputError, match="offload must be"):
        hy.load_pipeline(tiny_official, device="cpu", offload="disk")


@pytest.mark.parametrize("offload", ["model", "blocks"])
def test_controlnets_visit_with_the_dit_and_rest_after(tiny_official, offload):
    hint = Image.new("RGB", (64, 64), (250, 250, 250))
    hint.paste((0, 0, 0), (16, 16, 48, 48))
    net = tiny_controlnet()
    controls = [hy.Control(net, hint, strength=0.8), hy.Control(net, hint, strength=0.3, start=0.5)]  # one net twice
    reference = hy.load_pipeline(tiny_official, device="cpu")(PROMPT, **RUN, controlnets=controls)
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload=offload, resident_blocks=1)
    log = pipe.placement.residency["cpu"]
    seen = []  # what was resident whenever a ControlNet block computed
    for i, block in enumerate(net.blocks):
        block.register_forward_pre_hook(lambda m, a, i=i: seen.append((i, dict(log.resident))))
    assert _same_images(pipe(PROMPT, **RUN, controlnets=controls), reference)
    arrive, leave = log.events.index(("arrive", "controlnet.0")), log.events.index(("leave", "controlnet.0"))
    assert log.events.index(("arrive", "dit")) < arrive < leave < log.events.index(("leave", "dit"))
    assert [u for _, u in log.events].count("controlnet.0") == 2 and "controlnet.1" not in str(log.events)
    assert seen and all("dit" in units and "controlnet.0" in units for _, units in seen)
    if offload == "blocks":  # streamed like the DiT's, with their own bytes
        assert all(units[f"controlnet.0.blocks.{i}"] == weight_bytes(net.blocks[i]) for i, units in seen)
        assert log.most_resident("controlnet.0.blocks.") == 1
    else:
        assert not any(u.startswith("controlnet.0.blocks.") for _, u in log.events)
    assert log.resident == {} and all(len(m._forward_pre_hooks) == 1 for m in net.blocks)  # only the test's hook


@pytest.mark.parametrize("offload", ["model", "blocks"])
def test_an_ip_adapter_attached_after_loading_visits_with_the_dit(tiny_official, tmp_path, offload):
    ipa_path, encoder_path = make_tiny_ip_adapter(tmp_path)
    ipa = hy.load_ip_adapter(ipa_path, image_encoder=encoder_path, device="cpu", dtype="fp32")
    reference = hy.load_pipeline(tiny_official, device="cpu")
    kw = dict(**RUN, ip_adapter=ipa, ip_image=Image.new("RGB", (40, 30), (200, 30, 40)))
    expected = reference(PROMPT, **kw)
    pipe = hy.load_pipeline(tiny_official, device="cpu", offload=offload)
    log = pipe.placement.residency["cpu"]
    dit_bytes = []
    pipe.dit.blocks[0].register_forward_pre_hook(lambda m, a: dit_bytes.append(
        sum(b for u, b in log.resident.items() if u == "dit" or u.startswith("dit.blocks."))))
    assert _same_images(pipe(PROMPT, **kw), expected)
    # the DiT was placed anew with its image branch: what visits is the DiT with the adapter's weights
    assert dit_bytes and max(dit_bytes) > 0 and pipe.placement._visitors["dit"].fits(pipe.dit)
    resting = pipe.placement._visitors["dit"]
    streamed = sum(w.nbytes for s in resting.streams for w in s.weights)
    assert resting.weights.nbytes + streamed == weight_bytes(pipe.dit)
    encoder = log.events.index(("arrive", "image_encoder"))
    assert log.events[encoder + 1] == ("leave", "image_encoder") and encoder < log.events.index(("arrive", "dit"))
    assert log.resident == {}
    assert _same_images(pipe(PROMPT, **kw), expected)  # placed once: the second call needs nothing new
    assert pipe.placement._visitors["dit"] is resting


def test_the_computed_full_size_peaks_meet_the_targets():
    """bench/gpu_check.py's CPU part: v1.2-sized models on the meta device through the real placement."""
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    peaks = gpu_check.computed_peaks()
    assert set(peaks) == {"default", "model", "blocks", "model+fp8", "blocks+fp8"}
    for mode, r in peaks.items():
        assert r["target_gb"] is None or r["peak_gb"] <= r["target_gb"], mode
    assert peaks["blocks"]["peak_gb"] < peaks["model"]["peak_gb"] < peaks["default"]["peak_gb"]
    assert peaks["model+fp8"]["peak_gb"] < peaks["model"]["peak_gb"]


def test_tiled_decode_is_chosen_only_when_a_whole_decode_would_not_fit(monkeypatch):
    from hunyuan_core.model import vae as vae_module

    class Config:
        block_out_channels = [128, 256, 512, 512]

    class SDXL:
        config = Config

    latents = torch.zeros(1, 4, 128, 128, dtype=torch.float16, device="meta")
    assert decode_bytes(SDXL, latents) == 4 * 1024 * 1024 * 256 * 2  # 2 GiB at 1024² in fp16
    monkeypatch.setattr(vae_module, "free_memory", lambda device: 3 << 30)
    assert not decode_needs_tiles(SDXL, latents)
    monkeypatch.setattr(vae_module, "free_memory", lambda device: 1 << 30)
    assert decode_needs_tiles(SDXL, latents)
    assert not decode_needs_tiles(SDXL, torch.zeros(1, 4, 128, 128))  # never on the CPU


# ------------------------------------------------------------------------------------------------ fp8 storage
FP8_BOUND = {torch.float8_e4m3fn: 0.04, torch.float8_e5m2: 0.07}  # README: relative RMS error of one layer


@pytest.mark.parametrize("dtype", list(FP8_BOUND))
def test_fp8_linear_error_on_a_full_size_layer_is_within_the_bound(dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(1408, 6144)  # a DiT-g/2 fc1
    torch.nn.init.normal_(layer.weight, std=0.02)
    x = torch.randn(256, 1408)
    model = torch.nn.Sequential(torch.nn.Module())
    model.blocks = torch.nn.ModuleList([torch.nn.Sequential(layer)])
    ref = layer(x)
    assert store_fp8(model, dtype, "dit") == 1
    fp8 = model.blocks[0][0]
    assert isinstance(fp8, FP8Linear) and fp8.weight.dtype == dtype and fp8.bias is layer.bias
    error = ((fp8(x) - ref).norm() / ref.norm()).item()
    assert 0.005 < error < FP8_BOUND[dtype]


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_pipeline_stores_only_block_linears_and_stays_close(tiny_official, reference, weight_dtype):
    base = hy.load_pipeline(tiny_official, device="cpu")
    pipe = hy.load_pipeline(tiny_official, device="cpu", weight_dtype=weight_dtype, offload="blocks")
    dtype = WEIGHT_DTYPES[weight_dtype]
    for model, ref, under in ((pipe.dit, base.dit, "blocks."), (pipe.text_encoder.mt5, base.text_encoder.mt5, "encoder.block.")):
        ref_sd = ref.state_dict()
        for key, t in model.state_dict().items():
            module = model.get_submodule(key.rpartition(".")[0])
            if isinstance(module, FP8Linear) and key.endswith(".weight"):
                assert key.startswith(under) and not key.endswith("wo.weight") and t.dtype == dtype
                assert torch.equal(t, ref_sd[key].to(dtype))
            else:  # norms, embeddings, pooler, embedders, final layer, biases, mT5's wo: untouched
                assert t.dtype == ref_sd[key].dtype and torch.equal(t, ref_sd[key]), key
    fp8_linears = sum(isinstance(m, FP8Linear) for m in pipe.dit.modules())
    assert fp8_linears == sum(isinstance(m, torch.nn.Linear) for m in base.dit.blocks.modules())
    out = pipe(PROMPT, **RUN)
    error = ((out.latents - reference.latents).norm() / reference.latents.norm()).item()
    assert 0 < error < FP8_BOUND[dtype] * 2  # README: the tiny model's latents after 3 steps


def test_an_fp8_checkpoint_round_trips(tmp_path, tiny_official):
    pipe = hy.load_pipeline(tiny_official, device="cpu", weight_dtype="fp8_e4m3fn")
    folder = save_pipeline(pipe, tmp_path / "fp8", "diffusers")
    stored = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    fp8_keys = [k for k, t in stored.items() if t.dtype == torch.float8_e4m3fn]  # diffusers names: q, k, v split
    assert fp8_keys and all(k.startswith("blocks.") and k.endswith(".weight") for k in fp8_keys)
    again = hy.load_pipeline(folder, device="cpu", weight_dtype="fp8_e4m3fn")
    assert all(torch.equal(a, b) and a.dtype == b.dtype
               for a, b in zip(again.dit.state_dict().values(), pipe.dit.state_dict().values()))
    upcast = hy.load_pipeline(folder, device="cpu")  # the fp8 values in 32 bits compute the same images
    assert _same_images(upcast(PROMPT, **RUN), pipe(PROMPT, **RUN))


def test_comfyui_fp8_and_scaled_fp8_files_load(tmp_path, tiny_comfy):
    sd = load_file(tiny_comfy)
    blocks = [k for k in sd if k.startswith("model.diffusion_model.blocks.") and sd[k].ndim == 2]
    plain = {**sd, **{k: sd[k].to(torch.float8_e4m3fn) for k in blocks}}
    save_file(plain, tmp_path / "fp8.safetensors")
    scale = torch.tensor(0.5)
    scaled = {**sd, "model.diffusion_model.scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for k in blocks:
        scaled[k] = (sd[k].float() / scale).to(torch.float8_e4m3fn)
        scaled[k[: -len("weight")] + "scale_weight"] = scale.clone()
    save_file(scaled, tmp_path / "scaled.safetensors")
    for name, data in (("fp8", plain), ("scaled", scaled)):
        dit = hy.load_dit(tmp_path / f"{name}.safetensors", device="cpu", dtype=torch.float32)
        got = dit.state_dict()
        for k in blocks:
            want = data[k].float() * (scale if name == "scaled" else 1)
            assert torch.equal(got[k.removeprefix("model.diffusion_model.")], want)
    assert dequantise_scaled_fp8({"a.weight": sd[blocks[0]]}) == {"a.weight": sd[blocks[0]]}


def test_the_command_line_takes_offload_and_weight_dtype(tiny_official, tmp_path):
    from hunyuan_core.cli import main

    args = ["generate", "--model", str(tiny_official), "--prompt", "一只猫", "--width", "64", "--height", "64",
            "--steps", "2", "--device", "cpu", "--offload", "blocks", "--weight-dtype", "fp8_e5m2", "--out", str(tmp_path)]
    assert main(args) == 0 and len(list(tmp_path.glob("*.png"))) == 1
    with pytest.raises(InputError, match="weight_dtype must be"):
        hy.load_pipeline(tiny_official, device="cpu", weight_dtype="int4")
