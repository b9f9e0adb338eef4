"""The node pack in the real ComfyUI's process: declarations (V3 schemas), every node run on tiny models as
ComfyUI's executor calls it, host integration (ComfyUI's own model management, progress bar, previews and
interrupt, observed through spies on the real functions), ComfyUI type conventions, bad inputs.

What runs through ComfyUI's server (validation of widget values, caching, the graph) is tested in
tests/test_workflows.py. The one stand-in here is ``node_texts`` (tests/conftest.py) for the server's
``send_progress_text``."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
import torch
from comfy_host import ROOT, comfyui_dir, require_comfyui
from comfy_host import run_node as call_node
from comfy_models import (
    ALL_IN_ONE,
    BERT_FILE,
    DIFFUSERS_V12,
    DIT_ONLY,
    MISPLACED_VAE,
    MT5_FILE,
    OFFICIAL_V11,
    VAE_FILE,
    tiny_models,
)

HOST = require_comfyui()

from hunyuan_core.errors import InputError, ModelFileError  # noqa: E402
from hunyuan_core.formats.two_files import load_text_encoder_from_files  # noqa: E402
from nodes import collect_nodes, host  # noqa: E402
from nodes.conditioning import HunyuanDiTTextEncode  # noqa: E402
from nodes.latent import HunyuanDiTVAEDecode, HunyuanDiTVAEEncode  # noqa: E402
from nodes.loaders import (  # noqa: E402
    SEPARATE_FILES,
    HunyuanDiTCheckpointLoader,
    HunyuanDiTModelLoader,
    HunyuanDiTTextEncoderLoader,
    HunyuanDiTVAELoader,
    bert_vocab_for,
)
from nodes.sampling import CUSTOM, HunyuanDiTSampler  # noqa: E402

NODES, FAILURES = collect_nodes()
MAPPINGS = {cls.GET_SCHEMA().node_id: cls for cls in NODES}
# Types ComfyUI itself defines; every other type a node uses must carry our prefix.
COMFY_TYPES = {"IMAGE", "MASK", "LATENT", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "CONDITIONING", "MODEL",
               "VAE", "CLIP", "UPSCALE_MODEL"}
SMALL = dict(resolution=CUSTOM, width=64, height=64, steps=3, cfg=6.0, guidance_rescale=0.0,
             sampler_name="ddpm", seed=1, batch_size=1, denoise=1.0)


@pytest.fixture(autouse=True)
def models_env(monkeypatch):
    """Model folders for the fallback host (no ComfyUI): $HUNYUAN_MODELS_DIR = the tiny models."""
    folders = tiny_models()
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(folders.models))
    return folders


@pytest.fixture(scope="module")
def loaded():
    """Model, text encoder and VAE from the tiny all-in-one file (loaded once for the module)."""
    folders = tiny_models()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(host.MODELS_DIR_ENV, str(folders.models))
        outputs, _ui = call_node(HunyuanDiTCheckpointLoader, ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto")
    return outputs


class Spy:
    """Calls to ComfyUI's real host functions, recorded as ``(name, *args)``; progress bar updates and the
    preview images sent with them."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.previews: list[tuple] = []

    def wrap(self, monkeypatch, module, name):
        real = getattr(module, name)

        def spied(*args, **kwargs):
            self.calls.append((name, *args))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spied)


@pytest.fixture()
def spy(comfyui, monkeypatch):
    """Spies on ComfyUI's model management and progress hook, with Latent2RGB previews switched on."""
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    recorder = Spy()
    mm = comfyui.modules["comfy.model_management"]
    for name in ("get_torch_device", "intermediate_device", "free_memory", "soft_empty_cache",
                 "throw_exception_if_processing_interrupted"):
        recorder.wrap(monkeypatch, mm, name)

    def hook(value, total, preview, node_id=None):
        recorder.calls.append(("progress", value, total))
        if preview is not None:
            recorder.previews.append(preview)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    return recorder


def encode(encoder, positive="一只戴着墨镜的柴犬", negative=""):
    (pos, neg), _ui = call_node(HunyuanDiTTextEncode, text_encoder=encoder, positive=positive, negative=negative)
    return pos, neg


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    return images.cpu().float().numpy()


# ----------------------------------------------------------------------------------- declarations
def test_pack_registers_its_nodes_through_comfy_entrypoint_as_comfyui_loads_it():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hunyuan_dit_pack", ROOT / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    extension = asyncio.run(pack.comfy_entrypoint())
    classes = asyncio.run(extension.get_node_list())
    assert {cls.GET_SCHEMA().node_id for cls in classes} == set(MAPPINGS) and FAILURES == {}
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")  # ComfyUI would then skip comfy_entrypoint


def test_pack_imports_outside_comfyui_and_registers_nothing():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "print(hasattr(m, 'comfy_entrypoint'), 'comfy_api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "__init__.py")], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"] and "Warning" not in out.stderr


@pytest.mark.parametrize("node_id", sorted(MAPPINGS))
def test_node_schema_is_well_formed(node_id):
    cls = MAPPINGS[node_id]
    schema = cls.GET_SCHEMA()
    assert node_id.startswith("HunyuanDiT") and schema.display_name.startswith("HunyuanDiT ")
    assert schema.category.split("/")[0] == "HunyuanDiT" and schema.category.count("/") == 1
    assert schema.description
    for item in schema.inputs:
        assert item.tooltip, f"{node_id}.{item.id} has no tooltip"
        type_ = item.get_io_type()
        for part in type_.split(","):
            assert part in COMFY_TYPES or part.startswith("HYDIT_"), f"{node_id}.{item.id}: {part} lacks HYDIT_"
        if type_ in ("INT", "FLOAT"):
            assert item.min <= item.default <= item.max, item.id
        if type_ == "COMBO" and item.default is not None:
            assert item.default in item.options, item.id
    for output in schema.outputs or []:
        assert output.tooltip and output.display_name
        assert output.io_type in COMFY_TYPES or output.io_type.startswith("HYDIT_"), output.io_type


def test_sampler_offers_the_ten_official_sizes_and_a_seed_with_control_after_generate():
    required = HunyuanDiTSampler.INPUT_TYPES()["required"]
    resolutions = required["resolution"][1]["options"]
    assert len(resolutions) == 11 and resolutions[-1] == CUSTOM and "1280x768 (16:9)" in resolutions
    assert required["seed"][1]["control_after_generate"] is True
    assert (required["seed"][1]["min"], required["seed"][1]["max"]) == (0, 2**64 - 1)  # as KSampler
    assert "custom" in required["width"][1]["display_name"] and "ignored" in required["height"][1]["tooltip"]
    assert not required["sampler_name"][1]["tooltip"].startswith("Scheduler.")
    negative = HunyuanDiTTextEncode.INPUT_TYPES()["required"]["negative"][1]
    assert negative["multiline"] and negative["default"].startswith("错误的眼睛")
    assert "merge" in HunyuanDiTModelLoader.INPUT_TYPES()["required"]["variant"][1]["options"]


def test_model_pickers_list_every_layout():
    choices = HunyuanDiTModelLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    assert {ALL_IN_ONE, DIT_ONLY, OFFICIAL_V11, DIFFUSERS_V12} <= set(choices)
    sources = HunyuanDiTTextEncoderLoader.INPUT_TYPES()["required"]["source"][1]["options"]
    assert {ALL_IN_ONE, OFFICIAL_V11, DIFFUSERS_V12, SEPARATE_FILES} <= set(sources)
    assert VAE_FILE in HunyuanDiTVAELoader.INPUT_TYPES()["required"]["vae_name"][1]["options"]


# --------------------------------------------------------------------------- nodes on tiny models
def test_text_to_image_from_the_all_in_one_file(loaded):
    model, encoder, vae, info = loaded
    assert "v1.2" in info and model.dit.config.version == "1.2"
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    assert latent["samples"].shape == (1, 4, 8, 8) and latent["samples"].device.type == "cpu"
    (image,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
    assert image.shape == (1, 64, 64, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_latent_is_unscaled_and_decodes_with_diffusers_sdxl_vae_to_the_same_image(loaded, models_env):
    """ComfyUI's VAEDecode decodes LATENT samples as they are: check with diffusers' own AutoencoderKL."""
    from diffusers import AutoencoderKL

    model, encoder, vae, _ = loaded
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    (ours,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
    reference = AutoencoderKL.from_pretrained(models_env.models / DIFFUSERS_V12 / "vae")  # same weights
    with torch.no_grad():
        theirs = (reference.decode(latent["samples"]).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    np.testing.assert_allclose(to_numpy_images(ours), theirs.numpy(), atol=2e-3)


def test_tiled_decode_matches_whole_decode(loaded):
    model, encoder, vae, _ = loaded
    latent = {"samples": torch.randn(1, 4, 24, 24)}
    (whole,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
    (tiled,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=True)
    assert tiled.shape == whole.shape == (1, 192, 192, 3)


def test_model_loader_reads_every_layout_and_reports_the_version(models_env):
    for choice, version, label in ((ALL_IN_ONE, "1.2", "v1.2"), (DIT_ONLY, "1.1", "v1.0/v1.1"),
                                   (OFFICIAL_V11, "1.1", "v1.0/v1.1"), (DIFFUSERS_V12, "1.2", "v1.2")):
        (model, info), ui = call_node(HunyuanDiTModelLoader, model_name=choice, variant="auto", dtype="fp32")
        assert model.dit.config.version == version and label in info and choice in info
        assert ui["text"] == [info]
    (model, info), _ = call_node(HunyuanDiTModelLoader, model_name=OFFICIAL_V11, variant="ema", dtype="bf16")
    assert model.dit.dtype == torch.bfloat16 and "ema" in info


def test_text_encoder_sources_agree(loaded):
    """The all-in-one file, the official folder and two separate files hold the same tiny encoders."""
    reference, _ = encode(loaded[1], "a cat catching butterflies")
    separate = {"bert_file": BERT_FILE, "mt5_file": MT5_FILE}
    for source, files in ((OFFICIAL_V11, {}), (DIFFUSERS_V12, {}), (SEPARATE_FILES, separate)):
        (encoder,), _ = call_node(HunyuanDiTTextEncoderLoader, source=source, dtype="fp32",
                                  **{"bert_file": "none", "mt5_file": "none", **files})
        pos, _ = encode(encoder, "a cat catching butterflies")
        torch.testing.assert_close(pos.t5, reference.t5, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(pos.clip, reference.clip, atol=2e-3, rtol=2e-3)


def test_loaders_store_block_weights_in_fp8_as_the_core_does(loaded, models_env):
    """The weight_dtype option: the same fp8 weights as ``hunyuan_core``'s loaders, a close image, and a
    workflow without the option (saved before it existed) loads as before."""
    from hunyuan_core.loaders import load_parts
    from hunyuan_core.model.fp8 import FP8Linear

    (model, encoder, _vae, info), _ = call_node(HunyuanDiTCheckpointLoader, ckpt_name=ALL_IN_ONE, variant="auto",
                                               dtype="fp32", weight_dtype="fp8_e4m3fn")
    assert "block weights fp8_e4m3fn" in info and "fp8" not in loaded[3]
    core = load_parts(models_env.models / ALL_IN_ONE, ("dit", "text_encoder"), device="cpu", dtype="fp32",
                      bert_vocab=bert_vocab_for(str(models_env.models / ALL_IN_ONE)), weight_dtype="fp8_e4m3fn")
    ours = {**model.dit.state_dict(), **{f"mt5.{k}": v for k, v in encoder.encoder.mt5.state_dict().items()}}
    theirs = {**core.dit.state_dict(), **{f"mt5.{k}": v for k, v in core.text_encoder.mt5.state_dict().items()}}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(t.dtype == torch.float8_e4m3fn for t in ours.values())
    assert isinstance(model.dit.blocks[0].attn1.Wqkv, FP8Linear)
    assert all(type(m) is torch.nn.Linear for m in loaded[0].dit.modules() if isinstance(m, torch.nn.Linear))
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    ref_pos, ref_neg = encode(loaded[1])
    (reference,), _ = call_node(HunyuanDiTSampler, model=loaded[0], positive=ref_pos, negative=ref_neg, **SMALL)
    error = ((latent["samples"] - reference["samples"]).norm() / reference["samples"].norm()).item()
    assert 0 < error < 0.1
    (dit, dit_info), _ = call_node(HunyuanDiTModelLoader, model_name=DIFFUSERS_V12, variant="auto", dtype="fp32",
                                  weight_dtype="fp8_e5m2")
    assert "block weights fp8_e5m2" in dit_info and dit.dit.blocks[0].mlp.fc1.weight.dtype == torch.float8_e5m2
    (te,), _ = call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="fp32", bert_file=BERT_FILE,
                         mt5_file=MT5_FILE, weight_dtype="fp8_e4m3fn")
    assert te.encoder.mt5.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float8_e4m3fn
    assert te.encoder.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.float32
    with pytest.raises(InputError, match="weight_dtype must be"):
        call_node(HunyuanDiTModelLoader, model_name=DIT_ONLY, variant="auto", dtype="fp32", weight_dtype="int4")


def test_vae_loader_reads_a_vae_file_and_model_folders(loaded):
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    (reference,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=loaded[2], tiled=False)
    for choice in (VAE_FILE, ALL_IN_ONE, DIFFUSERS_V12, OFFICIAL_V11):
        (vae,), _ = call_node(HunyuanDiTVAELoader, vae_name=choice, dtype="fp32")
        (image,), _ = call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
        if choice != OFFICIAL_V11:  # the tiny v1.1 model has other random VAE weights
            torch.testing.assert_close(image, reference, atol=2e-3, rtol=0)


def test_official_v11_folder_runs_text_to_image(models_env):
    (model, info), _ = call_node(HunyuanDiTModelLoader, model_name=OFFICIAL_V11, variant="auto", dtype="auto")
    (encoder,), _ = call_node(HunyuanDiTTextEncoderLoader, source=OFFICIAL_V11, dtype="auto",
                              bert_file="none", mt5_file="none")
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg,
                             **{**SMALL, "width": 96, "batch_size": 2})
    assert latent["samples"].shape == (2, 4, 8, 12)


def test_img2img_and_batch_from_a_latent(loaded):
    model, encoder, vae, _ = loaded
    pos, neg = encode(encoder)
    image = torch.rand(1, 70, 90, 3)  # not a multiple of 16: the encoder crops to 64 x 80
    (latent,), _ = call_node(HunyuanDiTVAEEncode, image=image, vae=vae)
    assert latent["samples"].shape == (1, 4, 8, 10)
    (again,), _ = call_node(HunyuanDiTVAEEncode, image=image, vae=vae)
    torch.testing.assert_close(again["samples"], latent["samples"])  # deterministic, for ComfyUI's cache
    (pair,), _ = call_node(HunyuanDiTVAEEncode, image=torch.cat([torch.rand(1, 70, 90, 3), image]), vae=vae)
    assert (pair["samples"][1:] - latent["samples"]).abs().max().item() <= 1e-5  # as encoded alone
    (out,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, latent=latent,
                          **{**SMALL, "denoise": 0.5, "batch_size": 2})
    assert out["samples"].shape == (2, 4, 8, 10)
    assert not torch.equal(out["samples"][0], latent["samples"][0])
    (second,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, latent=latent,
                             **{**SMALL, "denoise": 0.5, "seed": SMALL["seed"] + 1})
    # picture 1 == a run with seed + 1 (unscaled latents, ~10: fp32 rounding of the batched DiT)
    torch.testing.assert_close(out["samples"][1:], second["samples"], atol=1e-4, rtol=1e-5)


def test_inpainting_keeps_what_the_mask_keeps(loaded):
    model, encoder, vae, _ = loaded
    pos, neg = encode(encoder)
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    mask = torch.zeros(1, 64, 64)
    (kept,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, latent=latent, mask=mask,
                           **SMALL)
    torch.testing.assert_close(kept["samples"], latent["samples"], atol=1e-4, rtol=1e-4)
    mask[:, :32] = 1.0  # repaint the top half, as a [B,H,W] ComfyUI MASK
    (half,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, latent=latent, mask=mask,
                           **SMALL)
    torch.testing.assert_close(half["samples"][..., 5:, :], latent["samples"][..., 5:, :], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(half["samples"][..., :3, :], latent["samples"][..., :3, :])
    # a LATENT noise_mask (ComfyUI's Set Latent Noise Mask), [H,W], is used when no MASK is connected
    (noise_masked,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg,
                                   latent={**latent, "noise_mask": mask[0]}, **SMALL)
    torch.testing.assert_close(noise_masked["samples"], half["samples"])


def test_truncated_prompt_is_reported_with_the_part_that_was_cut(loaded, comfyui, node_texts):
    long_prompt = "a cute cat " * 60 + "THE END"
    with pytest.warns(UserWarning, match="too long"):
        _, ui = call_node(HunyuanDiTTextEncode, unique_id="7", text_encoder=loaded[1], positive=long_prompt,
                          negative="")
    assert len(ui["text"]) == 1 and "positive" in ui["text"][0] and "end" in ui["text"][0].lower()
    assert node_texts == [("7", ui["text"][0])]


# ------------------------------------------------------------------------------ host integration
def test_comfyui_host_services_are_used(loaded, spy):
    model, encoder, vae, _ = loaded
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    names = [c[0] for c in spy.calls]
    assert "get_torch_device" in names and "intermediate_device" in names
    assert [c[1:] for c in spy.calls if c[0] == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert len(spy.previews) == 3 and spy.previews[0][0] == "JPEG"
    assert names.count("throw_exception_if_processing_interrupted") == 3
    assert latent["samples"].device == torch.device("cpu")


def test_all_in_one_file_inside_comfyui_uses_comfyuis_bert_vocabulary(comfyui, tmp_path, models_env):
    from nodes.loaders import bert_vocab_for

    lone = tmp_path / "lone" / "hunyuan_dit_1.2.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(b"")
    assert bert_vocab_for(str(lone)) == str(comfyui_dir() / "comfy" / "text_encoders" / "hydit_clip_tokenizer")
    beside = models_env.models / ALL_IN_ONE
    assert bert_vocab_for(str(beside)) == str(beside.parent / "hydit_clip_tokenizer")


def test_user_directory_is_comfyuis_inside_comfyui_only(monkeypatch):
    assert host.user_directory() is None
    with monkeypatch.context() as patch:
        for name, module in HOST.modules.items():
            patch.setitem(sys.modules, name, module)
        assert host.user_directory() == str(HOST.base / "user")


def count_forwards(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_interrupt_stops_sampling_within_one_step(loaded):
    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    calls, handle = count_forwards(model.dit)
    original = host.progress_callback

    def progress_then_interrupt(total):
        def progress(step, total_steps, preview=None):
            if step == 2:
                host.request_interrupt()
        return progress

    host.progress_callback = progress_then_interrupt
    try:
        with pytest.raises(host.ProcessingInterrupted):
            call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SMALL, "steps": 20})
    finally:
        host.progress_callback = original
        handle.remove()
    assert len(calls) == 2  # the step that was running finished; no further step started
    host.cancel_callback()()  # the request was consumed: a new run starts clean


def test_interrupt_through_comfyui_stops_within_one_step(loaded, comfyui, monkeypatch):
    import comfy.utils

    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    calls, handle = count_forwards(model.dit)
    mm = comfyui.modules["comfy.model_management"]

    def interrupt_after_the_first_step(value, total, preview, node_id=None):
        if value == 1:
            mm.interrupt_current_processing(True)  # what POST /interrupt does

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", interrupt_after_the_first_step)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SMALL, "steps": 20})
    finally:
        handle.remove()
        mm.interrupt_current_processing(False)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------ bad inputs
def test_missing_model_file_names_the_folders_searched(models_env):
    """A name that is not in the picker (a workflow from another machine) reaches the node itself."""
    with pytest.raises(ModelFileError) as err:
        call_node(HunyuanDiTModelLoader, model_name="diffusion_models/nope.safetensors", variant="auto", dtype="auto")
    for folder in ("unet", "diffusion_models"):
        assert str(models_env.models / folder) in str(err.value)
    with pytest.raises(ModelFileError, match="searched"):
        call_node(HunyuanDiTVAELoader, vae_name="vae/missing.safetensors", dtype="auto")


def test_wrong_kind_of_file_says_what_it_is_and_what_was_expected(models_env):
    path = str(models_env.models / MISPLACED_VAE)
    with pytest.raises(ModelFileError) as err:
        call_node(HunyuanDiTModelLoader, model_name=MISPLACED_VAE, variant="auto", dtype="auto")
    message = str(err.value).replace(path, "<file>")
    assert "Hunyuan-DiT" in message and "VAE" in message, message


def test_text_encoder_files_swapped_or_incomplete_say_what_is_missing(models_env, tmp_path, monkeypatch):
    monkeypatch.setattr(host, "comfy_bert_vocab", lambda: None)  # outside ComfyUI: no bundled vocabulary
    with pytest.raises(ModelFileError, match="bert_file: .* is a T5 / mT5 text encoder; expected a BERT text encoder"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto",
                  bert_file=MT5_FILE, mt5_file=MT5_FILE)
    with pytest.raises(ModelFileError, match="mt5_file: .* is a BERT text encoder; expected a T5 / mT5"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto",
                  bert_file=BERT_FILE, mt5_file=BERT_FILE)
    bert, mt5 = tmp_path / BERT_FILE, tmp_path / MT5_FILE  # the weights without the tokenizer files beside them
    for copy, name in ((bert, BERT_FILE), (mt5, MT5_FILE)):
        copy.parent.mkdir()
        copy.write_bytes((models_env.models / "text_encoders" / name).read_bytes())
    with pytest.raises(ModelFileError, match="mT5 tokenizer not found"):
        load_text_encoder_from_files(str(bert), str(mt5), "cpu", torch.float32)
    (mt5.parent / "spiece.model").write_bytes((models_env.models / "text_encoders" / MT5_FILE).with_name("spiece.model").read_bytes())
    with pytest.raises(ModelFileError, match="BERT vocabulary not found"):
        load_text_encoder_from_files(str(bert), str(mt5), "cpu", torch.float32)


def test_sampler_validates_size_and_sampler_before_anything_runs():
    """The server's range checks are tested in test_workflows.py; these are the node's own."""
    validate = HunyuanDiTSampler.validate_inputs
    assert validate(CUSTOM, 100, 64, "ddpm").startswith("size 100x64 is not a multiple of 16")
    assert "between" in validate(CUSTOM, 8000, 64, "ddpm")
    assert validate("1024x1024 (1:1)", 100, 64, "ddpm") is True  # preset: width/height unused
    assert "not one of" in validate("999x999", 64, 64, "ddpm")
    assert "sampler_name 'euler_a_typo' is not one of" in validate(CUSTOM, 64, 64, "euler_a_typo")


def test_mask_without_latent_and_half_picked_separate_files_explain_themselves(loaded):
    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    with pytest.raises(InputError, match="latent input"):
        call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, mask=torch.ones(64, 64), **SMALL)
    with pytest.raises(InputError, match="bert_file and mt5_file"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto",
                  bert_file=BERT_FILE, mt5_file="none")


def test_sampler_schedule_and_encode_bert_length_reach_the_core(loaded):
    model, encoder, _, _ = loaded
    long = "猫" * 100
    (pos77, neg), _ui = call_node(HunyuanDiTTextEncode, text_encoder=encoder, positive=long, negative="")
    (pos128, _), ui = call_node(HunyuanDiTTextEncode, text_encoder=encoder, positive=long, negative="", bert_length=128)
    assert pos77.clip.shape[1] == 77 and pos128.clip.shape[1] == 102
    assert not any("BERT" in text for text in ui["text"]) and "128 BERT" not in str(ui)
    assert HunyuanDiTTextEncode.INPUT_TYPES()["required"]["bert_length"][1]["max"] == 512
    run = lambda pos, **kw: call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg,  # noqa: E731
                                      **{**SMALL, "sampler_name": "euler", **kw})[0][0]["samples"]
    assert not torch.allclose(run(pos77, schedule="karras"), run(pos77), atol=1e-4)
    assert not torch.allclose(run(pos128), run(pos77), atol=1e-4)  # long conditioning beside a 77-token negative
    assert "has no karras schedule" in HunyuanDiTSampler.validate_inputs(CUSTOM, 64, 64, "ddim", "karras")
    assert HunyuanDiTSampler.validate_inputs(CUSTOM, 64, 64, "heun", "beta") is True
