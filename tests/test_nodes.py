"""The node pack without ComfyUI: declarations, every node run on tiny models as ComfyUI calls it, host
integration (through a recording fake of ComfyUI's modules), ComfyUI type conventions, bad inputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from comfy_graph import WorkflowError, call_node, input_specs
from comfy_host import ROOT, load_pack_like_comfyui
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
from fake_comfyui import FakeComfyUI, InterruptProcessingException, VRAMState

from hunyuan_core.errors import InputError, ModelFileError
from nodes import _common, collect_mappings, host
from nodes.conditioning import HunyuanDiTTextEncode
from nodes.latent import HunyuanDiTVAEDecode, HunyuanDiTVAEEncode
from nodes.loaders import (
    SEPARATE_FILES,
    HunyuanDiTCheckpointLoader,
    HunyuanDiTModelLoader,
    HunyuanDiTTextEncoderLoader,
    HunyuanDiTVAELoader,
    load_text_encoder_from_files,
)
from nodes.sampling import CUSTOM, HunyuanDiTSampler

MAPPINGS, DISPLAY_NAMES, FAILURES = collect_mappings()
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
        outputs, _ui = call_node(HunyuanDiTCheckpointLoader, ckpt_name=ALL_IN_ONE, variant="auto", dtype="auto",
                                 text_encoder_policy="offload after encoding")
    return outputs


@pytest.fixture()
def comfyui(tmp_path, models_env, monkeypatch):
    """A recording fake ComfyUI host; the BERT vocabulary it 'ships' is the tiny one."""
    fake = FakeComfyUI(tmp_path / "comfyui", models_env.models,
                       bert_vocab=models_env.models / "checkpoints" / "hydit_clip_tokenizer" / "vocab.txt")
    fake.install(monkeypatch)
    host.register_model_folder(_common.HUNYUAN_FOLDER, "hunyuan")
    return fake


def encode(encoder, positive="一只戴着墨镜的柴犬", negative=""):
    (pos, neg), _ui = call_node(HunyuanDiTTextEncode, text_encoder=encoder, positive=positive, negative=negative)
    return pos, neg


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    return images.cpu().float().numpy()


# ----------------------------------------------------------------------------------- declarations
def test_pack_imports_as_comfyui_loads_it_and_without_comfyui():
    pack = load_pack_like_comfyui(ROOT)
    assert pack.IMPORT_FAILURES == {}
    assert set(pack.NODE_CLASS_MAPPINGS) == set(MAPPINGS) and FAILURES == {}
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert "comfy" not in sys.modules  # nothing imported ComfyUI


@pytest.mark.parametrize("node_id", sorted(MAPPINGS))
def test_node_declaration_is_well_formed(node_id):
    cls = MAPPINGS[node_id]
    assert node_id.startswith("HunyuanDiT") and cls.CATEGORY.startswith("HunyuanDiT")
    assert DISPLAY_NAMES[node_id] and cls.DESCRIPTION
    declared = cls.INPUT_TYPES()
    assert set(declared) <= {"required", "optional", "hidden"} and declared["required"]
    for name, category, type_, options in input_specs(cls):
        spec = declared[category][name]
        assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, name
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if isinstance(type_, str) and type_ not in COMFY_TYPES:
            assert type_.startswith("HYDIT_"), f"{node_id}.{name}: custom type {type_} lacks the HYDIT_ prefix"
        if type_ in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], name
        if isinstance(type_, list) and "default" in options:
            assert options["default"] in type_, name
    assert isinstance(cls.RETURN_TYPES, tuple)
    for type_ in cls.RETURN_TYPES:
        assert type_ in COMFY_TYPES or type_.startswith("HYDIT_"), type_
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))


def test_sampler_offers_the_ten_official_sizes_and_a_seed_with_control_after_generate():
    required = HunyuanDiTSampler.INPUT_TYPES()["required"]
    assert len(required["resolution"][0]) == 11 and required["resolution"][0][-1] == CUSTOM
    assert "1280x768 (16:9)" in required["resolution"][0]
    assert required["seed"][1]["control_after_generate"] is True
    negative = HunyuanDiTTextEncode.INPUT_TYPES()["required"]["negative"][1]
    assert negative["multiline"] and negative["default"].startswith("错误的眼睛")


def test_model_pickers_list_every_layout():
    choices = HunyuanDiTModelLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert {ALL_IN_ONE, DIT_ONLY, OFFICIAL_V11, DIFFUSERS_V12} <= set(choices)
    sources = HunyuanDiTTextEncoderLoader.INPUT_TYPES()["required"]["source"][0]
    assert {ALL_IN_ONE, OFFICIAL_V11, DIFFUSERS_V12, SEPARATE_FILES} <= set(sources)
    assert VAE_FILE in HunyuanDiTVAELoader.INPUT_TYPES()["required"]["vae_name"][0]


# --------------------------------------------------------------------------- nodes on tiny models
def test_text_to_image_from_the_all_in_one_file(loaded):
    model, encoder, vae, info = loaded
    assert "v1.2" in info and model.version == "1.2"
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
        assert model.version == version and label in info and choice in info
        assert ui["text"] == [info]
    (model, info), _ = call_node(HunyuanDiTModelLoader, model_name=OFFICIAL_V11, variant="ema", dtype="bf16")
    assert model.dit.dtype == torch.bfloat16 and "ema" in info


def test_text_encoder_sources_agree(loaded):
    """The all-in-one file, the official folder and two separate files hold the same tiny encoders."""
    reference, _ = encode(loaded[1], "a cat catching butterflies")
    separate = {"bert_file": BERT_FILE, "mt5_file": MT5_FILE}
    for source, files in ((OFFICIAL_V11, {}), (DIFFUSERS_V12, {}), (SEPARATE_FILES, separate)):
        (encoder,), _ = call_node(HunyuanDiTTextEncoderLoader, source=source, dtype="fp32",
                                  policy="keep on GPU", **{"bert_file": "none", "mt5_file": "none", **files})
        assert encoder.keep_on_gpu
        pos, _ = encode(encoder, "a cat catching butterflies")
        torch.testing.assert_close(pos.t5, reference.t5, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(pos.clip, reference.clip, atol=2e-3, rtol=2e-3)


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
                              policy="offload after encoding", bert_file="none", mt5_file="none")
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
    (out,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, latent=latent,
                          **{**SMALL, "denoise": 0.5, "batch_size": 2})
    assert out["samples"].shape == (2, 4, 8, 10)
    assert not torch.equal(out["samples"][0], latent["samples"][0])


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


def test_truncated_prompt_is_reported_with_the_part_that_was_cut(loaded, comfyui):
    long_prompt = "a cute cat " * 60 + "THE END"
    with pytest.warns(UserWarning, match="too long"):
        _, ui = call_node(HunyuanDiTTextEncode, unique_id="7", text_encoder=loaded[1], positive=long_prompt,
                          negative="")
    assert len(ui["text"]) == 1 and "positive" in ui["text"][0] and "end" in ui["text"][0].lower()
    assert comfyui.texts == [("7", ui["text"][0])]


# ------------------------------------------------------------------------------ host integration
def test_comfyui_host_services_are_used(loaded, comfyui):
    model, encoder, vae, _ = loaded
    pos, neg = encode(encoder)
    (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    names = [c[0] for c in comfyui.calls]
    assert "get_torch_device" in names and "intermediate_device" in names
    assert ("ProgressBar", 3) in comfyui.calls
    assert [c[1:] for c in comfyui.calls if c[0] == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert len(comfyui.previews) == 3 and comfyui.previews[0][0] == "JPEG"
    assert names.count("throw_exception_if_processing_interrupted") == 3


def test_all_in_one_file_inside_comfyui_uses_comfyuis_bert_vocabulary(comfyui, tmp_path, models_env):
    from nodes.loaders import bert_vocab_for

    lone = tmp_path / "lone" / "hunyuan_dit_1.2.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(b"")
    assert bert_vocab_for(str(lone)).endswith("text_encoders/hydit_clip_tokenizer")
    beside = models_env.models / ALL_IN_ONE
    assert bert_vocab_for(str(beside)) == str(beside.parent / "hydit_clip_tokenizer")


def test_user_directory_is_comfyuis_inside_comfyui_only(monkeypatch, tmp_path, models_env):
    assert host.user_directory() is None
    FakeComfyUI(tmp_path / "comfyui", models_env.models).install(monkeypatch)
    assert host.user_directory() == str(tmp_path / "comfyui" / "user")


class SpyModule(torch.nn.Module):
    """Records device moves without moving (so a 'cuda' compute device can be simulated on CPU)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1000))
        self.moves: list[str] = []

    def to(self, device=None, *args, **kwargs):
        self.moves.append(str(device))
        return self


@pytest.mark.parametrize("vram, expected_moves",
                         [(VRAMState.NORMAL_VRAM, ["cuda"]), (VRAMState.LOW_VRAM, ["cuda", "cpu"])])
def test_models_move_to_the_compute_device_after_freeing_memory_and_leave_it_in_low_vram(comfyui, vram, expected_moves):
    mm = comfyui.modules["comfy.model_management"]
    mm.get_torch_device = lambda: torch.device("cuda")
    mm.vram_state = vram
    spy = SpyModule()
    rest = host.offload_device() if host.low_vram() else None
    with _common.on_compute_device(spy, rest) as device:
        assert device.type == "cuda"
    assert spy.moves == expected_moves
    assert ("free_memory", 4000, torch.device("cuda")) in comfyui.calls


def test_an_error_or_interrupt_takes_the_model_off_the_gpu_and_frees_the_cache(comfyui):
    comfyui.modules["comfy.model_management"].get_torch_device = lambda: torch.device("cuda")
    spy = SpyModule()
    with pytest.raises(InterruptProcessingException):
        with _common.on_compute_device(spy, None):
            raise InterruptProcessingException()
    assert spy.moves == ["cuda", "cpu"] and comfyui.calls[-1] == ("soft_empty_cache",)


@pytest.fixture()
def rest_devices(monkeypatch):
    """Records where each node sends its model after the work (the ``rest_device`` it asks for)."""
    import contextlib

    import nodes.conditioning
    import nodes.latent
    import nodes.sampling

    seen = []

    @contextlib.contextmanager
    def recording(obj, rest):
        seen.append((type(obj).__name__, None if rest is None else str(rest)))
        with _common.on_compute_device(obj, rest) as device:
            yield device

    for module in (nodes.conditioning, nodes.latent, nodes.sampling):
        monkeypatch.setattr(module, "on_compute_device", recording)
    return seen


@pytest.mark.parametrize("vram", [VRAMState.NORMAL_VRAM, VRAMState.LOW_VRAM, VRAMState.HIGH_VRAM])
def test_where_models_rest_follows_comfyuis_vram_mode(loaded, comfyui, rest_devices, vram):
    mm = comfyui.modules["comfy.model_management"]
    mm.vram_state = vram
    if vram == VRAMState.HIGH_VRAM:  # ComfyUI then keeps the DiT on the GPU (here: a 'meta' stand-in)
        mm.unet_offload_device = lambda: torch.device("meta")
    model, encoder, vae, _ = loaded
    keep = _common.TextEncoderHandle(encoder.encoder, keep_on_gpu=True, source="test")
    pos, neg = encode(keep)
    encode(encoder)
    with pytest.MonkeyPatch.context() as mp:  # the DiT itself must not move to 'meta'
        mp.setattr(model.dit, "to", lambda *a, **k: model.dit, raising=False)
        (latent,), _ = call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **SMALL)
    call_node(HunyuanDiTVAEDecode, samples=latent, vae=vae, tiled=False)
    low = vram == VRAMState.LOW_VRAM
    assert rest_devices == [
        ("BilingualTextEncoder", "cpu" if low else None),  # keep on GPU, unless low VRAM
        ("BilingualTextEncoder", "cpu"),  # offload after encoding
        ("HunyuanDiT", "meta" if vram == VRAMState.HIGH_VRAM else "cpu"),
        ("AutoencoderKL", "cpu" if low else None),
    ]


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


def test_interrupt_through_comfyui_stops_within_one_step(loaded, comfyui):
    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    calls, handle = count_forwards(model.dit)
    progress_bar = comfyui.modules["comfy.utils"].ProgressBar
    interrupt = comfyui.modules["comfy.model_management"].interrupt_current_processing

    class InterruptingBar(progress_bar):
        def update_absolute(self, value, total=None, preview=None):
            super().update_absolute(value, total, preview)
            if value == 1:
                interrupt(True)  # what POST /interrupt does

    comfyui.modules["comfy.utils"].ProgressBar = InterruptingBar
    try:
        with pytest.raises(InterruptProcessingException):
            call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SMALL, "steps": 20})
    finally:
        handle.remove()
    assert len(calls) == 1


# ------------------------------------------------------------------------------------ bad inputs
def test_missing_model_file_names_the_folders_searched(models_env):
    """ComfyUI rejects names not in the picker; a file removed after listing reaches the node itself."""
    with pytest.raises(WorkflowError, match="not in"):
        call_node(HunyuanDiTModelLoader, model_name="diffusion_models/nope.safetensors", variant="auto", dtype="auto")
    with pytest.raises(ModelFileError) as err:
        HunyuanDiTModelLoader().load("diffusion_models/nope.safetensors", "auto", "auto")
    for folder in ("unet", "diffusion_models"):
        assert str(models_env.models / folder) in str(err.value)
    with pytest.raises(ModelFileError, match="searched"):
        HunyuanDiTVAELoader().load("vae/missing.safetensors", "auto")


def test_wrong_kind_of_file_says_what_it_is_and_what_was_expected(models_env):
    path = str(models_env.models / MISPLACED_VAE)
    with pytest.raises(ModelFileError) as err:
        call_node(HunyuanDiTModelLoader, model_name=MISPLACED_VAE, variant="auto", dtype="auto")
    message = str(err.value).replace(path, "<file>")
    assert "Hunyuan-DiT" in message and "VAE" in message, message


def test_text_encoder_files_swapped_or_incomplete_say_what_is_missing(models_env, tmp_path):
    with pytest.raises(ModelFileError, match="bert_file: .* is a T5 / mT5 text encoder; expected a BERT text encoder"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto", policy="keep on GPU",
                  bert_file=MT5_FILE, mt5_file=MT5_FILE)
    with pytest.raises(ModelFileError, match="mt5_file: .* is a BERT text encoder; expected a T5 / mT5"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto", policy="keep on GPU",
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


def test_out_of_range_widgets_are_rejected_before_anything_runs(loaded):
    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    for bad in ({"steps": 0}, {"cfg": 31.0}, {"sampler_name": "euler_a_typo"}, {"denoise": 0.0}, {"batch_size": 65}):
        with pytest.raises(WorkflowError):
            call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, **{**SMALL, **bad})
    assert HunyuanDiTSampler.VALIDATE_INPUTS(CUSTOM, 100, 64).startswith("size 100x64 is not a multiple of 16")
    assert "between" in HunyuanDiTSampler.VALIDATE_INPUTS(CUSTOM, 8000, 64)
    assert HunyuanDiTSampler.VALIDATE_INPUTS("1024x1024 (1:1)", 100, 64) is True  # preset: width/height unused
    assert "not one of" in HunyuanDiTSampler.VALIDATE_INPUTS("999x999", 64, 64)


def test_mask_without_latent_and_half_picked_separate_files_explain_themselves(loaded):
    model, encoder, _, _ = loaded
    pos, neg = encode(encoder)
    with pytest.raises(InputError, match="latent input"):
        call_node(HunyuanDiTSampler, model=model, positive=pos, negative=neg, mask=torch.ones(64, 64), **SMALL)
    with pytest.raises(InputError, match="bert_file and mt5_file"):
        call_node(HunyuanDiTTextEncoderLoader, source=SEPARATE_FILES, dtype="auto", policy="keep on GPU",
                  bert_file=BERT_FILE, mt5_file="none")
