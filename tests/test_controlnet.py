"""ControlNets against code nobody here wrote: diffusers' HunyuanDiT2DControlNetModel, its multi-ControlNet and
HunyuanDiTControlNetPipeline, OpenCV's Canny; and the behaviour of strengths, step ranges and several nets."""

import numpy as np
import pytest
import torch
from official_formulas import official_rope
from PIL import Image, ImageDraw, ImageFilter
from test_dit import diffusers_twin, inputs, random_dit

import hunyuan_core as hy
from hunyuan_core.controlnet.control import decaying_strengths, resize_hint
from hunyuan_core.controlnet.preprocess import canny, inpaint_hint
from hunyuan_core.tiny import make_tiny_controlnet, tiny_controlnet

PROMPT = "一只戴着墨镜的柴犬 a shiba inu"
NEG = "模糊"


def diffusers_controlnet(dit, seed: int):
    """A diffusers HunyuanDiT2DControlNetModel for ``dit``'s architecture with every weight random (its
    zero-initialised projections too, so the residuals carry a signal)."""
    from diffusers import HunyuanDiT2DControlNetModel

    c = dit.config
    torch.manual_seed(seed)
    net = HunyuanDiT2DControlNetModel(
        conditioning_channels=3, num_attention_heads=c.num_heads, attention_head_dim=c.head_dim,
        in_channels=c.in_channels, patch_size=c.patch_size, hidden_size=c.hidden_size, transformer_num_layers=c.depth,
        mlp_ratio=c.mlp_hidden / c.hidden_size, cross_attention_dim=c.text_dim, cross_attention_dim_t5=c.t5_dim,
        pooled_projection_dim=c.pooled_dim, text_len=c.text_len, text_len_t5=c.t5_len,
        use_style_cond_and_image_meta_size=c.size_cond, sample_size=16,
    )
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn_like(p) * (0.08 if "norm" not in name else 1.0))
    return net.eval()


def text_kwargs(a):
    return {k: a[k] for k in ("encoder_hidden_states", "text_embedding_mask", "encoder_hidden_states_t5",
                              "text_embedding_mask_t5", "image_meta_size", "style")}


@pytest.fixture(scope="module", params=["1.2", "1.1"])
def nets(request, tmp_path_factory):
    """(our DiT, its diffusers twin, two diffusers ControlNets, the same two loaded by us from their folders)."""
    dit = random_dit(size_cond=request.param == "1.1")
    theirs = [diffusers_controlnet(dit, seed) for seed in (11, 12)]
    ours = []
    for i, net in enumerate(theirs):
        folder = tmp_path_factory.mktemp(f"cn{request.param}_{i}")
        net.save_pretrained(folder)
        ours.append(hy.load_controlnet(folder, device="cpu", dtype=torch.float32))
    return dit, diffusers_twin(dit), theirs, ours


@pytest.mark.parametrize("hw", [(128, 128), (96, 160)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_controlnet_and_dit_match_diffusers(nets, hw):
    dit, twin, (ref, ref2), (cn, cn2) = nets
    h, w = hw
    assert cn.version == dit.config.version and len(cn.blocks) == 2
    a = inputs(dit.config, h, w)
    cond = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(3))
    cond2 = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(4))
    rope = tuple(torch.from_numpy(v) for v in official_rope(dit.config.head_dim, h, w))
    text = text_kwargs(a)
    with torch.no_grad():
        controls = cn(a["x"], a["t"], cond, **text)
        expected = ref(a["x"], a["t"], controlnet_cond=cond, image_rotary_emb=rope, return_dict=False, **text)[0]
        assert len(controls) == len(expected) == 2
        for ours, theirs in zip(controls, expected):
            assert ours.abs().mean() > 0.05
            assert (ours - theirs).abs().max().item() <= 1e-5
        # the text context fast path gives the same residuals
        fast = cn(a["x"], a["t"], cond, context=cn.text_context(*text.values()))
        assert all(torch.equal(f, c) for f, c in zip(fast, controls))
        out = dit(a["x"], a["t"], controls=controls, **text)
        ref_out = twin(a["x"], a["t"], image_rotary_emb=rope, controlnet_block_samples=list(expected), return_dict=False,
                       **text)[0]
        assert (out - dit(a["x"], a["t"], **text)).abs().max() > 1e-3  # the controls change the output
        assert (out - ref_out).abs().max().item() <= 1e-5

        # several ControlNets: diffusers' multi-ControlNet sums each net's scaled residuals
        from diffusers import HunyuanDiT2DMultiControlNetModel

        multi = HunyuanDiT2DMultiControlNetModel([ref, ref2])
        summed = multi(a["x"], a["t"], controlnet_cond=[cond, cond2], conditioning_scale=[0.7, 0.4],
                       image_rotary_emb=rope, return_dict=False, **text)[0]
        ours_summed = [0.7 * r1 + 0.4 * r2 for r1, r2 in zip(controls, cn2(a["x"], a["t"], cond2, **text))]
        for ours, theirs in zip(ours_summed, summed):
            assert (ours - theirs).abs().max().item() <= 1e-5


def test_control_count_must_match_the_skips(nets):
    dit, _, _, (cn, _) = nets
    a = inputs(dit.config, 64, 64)
    with pytest.raises(hy.InputError, match="1 controls for a DiT with 2 skip connections"):
        dit(a["x"], a["t"], controls=[torch.zeros(2, 16, 64)], **text_kwargs(a))
    with pytest.raises(hy.InputError, match="condition must have the latents' shape"):
        cn(a["x"], a["t"], a["x"][:, :, :4], **text_kwargs(a))


@pytest.mark.parametrize("layout,name", [("official", "cn.pt"), ("safetensors", "cn.safetensors"),
                                         ("diffusers", "cn_folder"), ("diffusers_file", "cn_diffusers.safetensors")])
def test_every_file_layout_loads_the_same_weights(tmp_path, layout, name):
    path = make_tiny_controlnet(tmp_path / name, layout, version="1.1", seed=3)
    cn = hy.load_controlnet(path, device="cpu")
    ref = tiny_controlnet("1.1", seed=3)
    assert cn.version == "1.1" and list(cn.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(cn.state_dict()[k], v) for k, v in ref.state_dict().items())
    with pytest.raises(hy.OutputError, match="already exists"):
        make_tiny_controlnet(path, layout, version="1.1", seed=3)


def test_deepspeed_wrapped_pickle_and_wrong_files(tmp_path, tiny_official):
    from hunyuan_core.formats.writing import save_pickle

    ref = tiny_controlnet()
    save_pickle({"module": ref.state_dict(), "step": torch.tensor(7)}, tmp_path / "wrapped.pt")
    cn = hy.load_controlnet(tmp_path / "wrapped.pt", device="cpu")
    assert all(torch.equal(cn.state_dict()[k], v) for k, v in ref.state_dict().items())
    with pytest.raises(hy.ModelFileError, match="not a Hunyuan-DiT ControlNet checkpoint \\(this looks like a Hunyuan-DiT\\)"):
        hy.load_controlnet(tiny_official / "t2i" / "model" / "pytorch_model_ema.pt")
    with pytest.raises(hy.ModelFileError, match="not found"):
        hy.load_controlnet(tmp_path / "missing.pt")
    with pytest.raises(hy.ModelFileError, match="this looks like a Hunyuan-DiT ControlNet"):
        hy.load_dit(tmp_path / "wrapped.pt")  # and the other way round
    diffusers_file = make_tiny_controlnet(tmp_path / "d.safetensors", "diffusers_file")
    with pytest.raises(hy.ModelFileError, match="this looks like a Hunyuan-DiT ControlNet"):
        hy.load_dit(diffusers_file)


def test_wrong_release_is_refused_naming_both(tiny_official):
    pipe = hy.load_pipeline(tiny_official, device="cpu")
    cn11 = tiny_controlnet("1.1")
    with pytest.raises(hy.InputError, match=r"made for a Hunyuan-DiT v1\.0/v1\.1 .*the DiT is a Hunyuan-DiT v1\.2"):
        hy.check_controlnet(cn11, pipe.dit)
    with pytest.raises(hy.InputError, match="v1.0/v1.1"):
        pipe(PROMPT, width=64, height=64, steps=1, controlnets=[hy.Control(cn11, Image.new("RGB", (64, 64)))])
    hy.check_controlnet(tiny_controlnet("1.2"), pipe.dit)  # the matching release passes


@pytest.fixture(scope="module")
def tiny_pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


def hint(seed: int = 0, size=(128, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_pipeline_matches_diffusers_controlnet_pipeline(tiny_diffusers, tiny_pipe, tmp_path, monkeypatch):
    from diffusers import HunyuanDiT2DControlNetModel, HunyuanDiTControlNetPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    folder = make_tiny_controlnet(tmp_path / "cn", "diffusers")
    ref_cn = HunyuanDiT2DControlNetModel.from_pretrained(folder, torch_dtype=torch.float32)
    ref = HunyuanDiTControlNetPipeline.from_pretrained(tiny_diffusers, controlnet=ref_cn, torch_dtype=torch.float32,
                                                       safety_checker=None, feature_extractor=None,
                                                       requires_safety_checker=False)
    # diffusers samples the hint's posterior without a generator; we encode its mode (deterministic): same here.
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    cn = hy.load_controlnet(folder, device="cpu", dtype=torch.float32)
    image = hint()
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    out = tiny_pipe(PROMPT, NEG, width=128, height=128, steps=4, seed=7, latents=latents,
                    controlnets=[hy.Control(cn, image, strength=0.8)])
    theirs = ref(PROMPT, negative_prompt=NEG, height=128, width=128, num_inference_steps=4, guidance_scale=6.0,
                 control_image=image, controlnet_conditioning_scale=0.8, latents=latents.clone(),
                 generator=torch.Generator("cpu").manual_seed(7), output_type="latent",
                 use_resolution_binning=False).images
    plain = tiny_pipe(PROMPT, NEG, width=128, height=128, steps=4, seed=7, latents=latents).latents
    assert (out.latents - plain).abs().max() > 0.05  # the ControlNet changes the result
    assert (out.latents - theirs).abs().max().item() <= 1e-4


def run(pipe, controls, steps=4, **kw):
    """Latents after every step of a 64x64 run with ``controls`` (a list of hy.Control)."""
    seen = []
    pipe(PROMPT, NEG, width=64, height=64, steps=steps, seed=3, sampler="ddim", controlnets=controls,
         progress=lambda step, total, x: seen.append(x.clone()), **kw)
    return seen


@pytest.fixture(scope="module")
def cn_tiny():
    return tiny_controlnet("1.2")


def test_strength_zero_equals_no_controlnet(tiny_pipe, cn_tiny):
    image = hint(size=(64, 64))
    none = run(tiny_pipe, [])
    assert torch.equal(run(tiny_pipe, [hy.Control(cn_tiny, image, strength=0.0)])[-1], none[-1])
    assert (run(tiny_pipe, [hy.Control(cn_tiny, image, strength=0.5)])[-1] - none[-1]).abs().max() > 1e-3


def test_start_end_select_the_steps_and_cfg_runs_the_controlnet_once_per_step(tiny_pipe, cn_tiny):
    image = hint(size=(64, 64))
    rows = []
    handle = cn_tiny.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    try:
        late = run(tiny_pipe, [hy.Control(cn_tiny, image, start=0.5)])
    finally:
        handle.remove()
    assert rows == [2, 2]  # steps 3 and 4 only, both CFG halves in one forward
    none, full = run(tiny_pipe, []), run(tiny_pipe, [hy.Control(cn_tiny, image)])
    assert torch.equal(late[1], none[1]) and (late[2] - none[2]).abs().max() > 1e-4
    early = run(tiny_pipe, [hy.Control(cn_tiny, image, end=0.5)])
    assert torch.equal(early[1], full[1]) and (early[3] - full[3]).abs().max() > 1e-4


def test_per_layer_strengths_and_two_controlnets_sum(tiny_diffusers):
    pipe = hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float64)  # sums compared without rounding noise
    cn = tiny_controlnet("1.2").to(torch.float64)  # the tiny DiT has one skip: one control
    image = hint(1, (64, 64))
    a = run(pipe, [hy.Control(cn, image, strength=[0.3])])
    b = run(pipe, [hy.Control(cn, image, strength=0.3)])
    assert torch.equal(a[-1], b[-1])  # a list of one per block == the same float
    half = run(pipe, [hy.Control(cn, image, strength=0.5), hy.Control(cn, image, strength=0.5)])
    whole = run(pipe, [hy.Control(cn, image, strength=1.0)])
    assert (half[-1] - whole[-1]).abs().max().item() <= 1e-10
    with pytest.raises(hy.InputError, match="a list of 1"):
        run(pipe, [hy.Control(cn, image, strength=[1.0, 0.5])])


def test_per_layer_list_scales_each_control(nets):
    from hunyuan_core.controlnet.stack import ControlStack
    from hunyuan_core.model.text_encoder import TextEmbeddings

    dit, _, _, (cn, _) = nets
    a = inputs(dit.config, 64, 64)
    cond = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(3))
    texts = TextEmbeddings(a["encoder_hidden_states"], a["text_embedding_mask"], a["encoder_hidden_states_t5"],
                           a["text_embedding_mask_t5"], ["a", "b"])
    prepared = hy.PreparedControl(cn, cond, torch.tensor([0.0, 2.0]))
    stack = ControlStack([prepared], dit, texts, a["image_meta_size"], a["style"], images=2, guided=False,
                         latent_size=(8, 8))
    with torch.no_grad():
        scaled = stack(a["x"], a["t"], 0.0)
        plain = cn(a["x"], a["t"], cond, **text_kwargs(a))
    assert torch.equal(scaled[0], torch.zeros_like(plain[0])) and plain[0].abs().max() > 0.01
    assert torch.allclose(scaled[1], 2.0 * plain[1], atol=1e-6)


def test_decaying_strengths_are_the_official_schedule():
    values = decaying_strengths(19)
    assert values == pytest.approx([1.0 * (0.825 ** float(19 - i)) for i in range(19)])
    assert values[-1] == pytest.approx(0.825) and values[0] == pytest.approx(0.825**19)


def test_bad_controls_are_refused(cn_tiny, tiny_pipe):
    image = hint(size=(64, 64))
    for bad, match in [(dict(start=0.8, end=0.2), "0 <= start <= end <= 1"), (dict(resize_mode="stretch"), "resize_mode"),
                       (dict(strength=float("nan")), "finite number"), (dict(strength="1"), "finite number")]:
        with pytest.raises(hy.InputError, match=match):
            tiny_pipe(PROMPT, width=64, height=64, steps=1, controlnets=[hy.Control(cn_tiny, image, **bad)])
    with pytest.raises(hy.InputError, match="prepared controls"):
        hy.sample(tiny_pipe.dit, tiny_pipe.encode_prompt(PROMPT), None, width=64, height=64, steps=1,
                  guidance_scale=1.0, controls=[hy.Control(cn_tiny, image)])


def test_prepare_controls_encodes_the_mode_once(tiny_pipe, cn_tiny):
    from hunyuan_core.model.vae import encode_images

    image = hint(size=(64, 64))
    (prepared,) = hy.prepare_controls([hy.Control(cn_tiny, image)], tiny_pipe.vae, 64, 64)
    pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        posterior = tiny_pipe.vae.encode(pixels * 2 - 1).latent_dist
    assert torch.allclose(prepared.condition, posterior.mode() * tiny_pipe.vae.config.scaling_factor, atol=1e-6)
    assert torch.equal(prepared.condition, encode_images(tiny_pipe.vae, pixels, mode=True))
    (again,) = hy.prepare_controls([hy.Control(cn_tiny, pixels)], tiny_pipe.vae, 64, 64)  # a tensor hint
    assert torch.allclose(again.condition, prepared.condition, atol=1e-6)


def test_resize_modes_are_the_official_ones():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue quarter on the left
    crop = np.asarray(resize_hint(wide, 64, 64, "crop_and_resize"))
    assert crop.shape == (64, 64, 3) and (crop[:, :, 2] < 50).all()  # scaled to 128x64, centre 64: all red
    fill = np.asarray(resize_hint(wide, 64, 64, "resize_and_fill"))
    assert (fill[:16] == 0).all() and (fill[48:] == 0).all()  # 64x32 centred on black
    assert fill[20:44, 2, 2].min() > 200 and fill[20:44, 60, 0].min() > 200  # blue left, red right
    stretch = np.asarray(resize_hint(wide, 64, 64, "resize"))
    assert stretch[:, 2, 2].min() > 200 and stretch[:, 30, 0].min() > 200


def test_canny_is_cv2_canny():
    cv2 = pytest.importorskip("cv2")
    image = hint(4, (96, 64)).filter(ImageFilter.GaussianBlur(3))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 40, 50), fill=(250, 240, 30))
    draw.ellipse((50, 8, 90, 48), fill=(20, 30, 200))
    edges = canny(image)
    expected = cv2.Canny(np.asarray(image), 100, 200)
    got = np.asarray(edges)
    assert edges.mode == "RGB" and expected.any()
    assert all(np.array_equal(got[:, :, c], expected) for c in range(3))
    as_tensor = canny(torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255, 50, 120)
    assert np.array_equal(as_tensor[0, 0].mul(255).round().byte().numpy(), cv2.Canny(np.asarray(image), 50, 120))


def test_inpaint_hint_blacks_out_the_mask():
    image = hint(5, (32, 32))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    out = np.asarray(inpaint_hint(image, mask))
    assert (out[8:24, 8:24] == 0).all() and np.array_equal(out[:8], np.asarray(image)[:8])
    t = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    m = torch.zeros(1, 32, 32)
    m[:, 8:24, 8:24] = 1.0
    out_t = inpaint_hint(t, m)
    assert torch.equal(out_t[:, :, 8:24, 8:24], torch.zeros(1, 3, 16, 16)) and torch.equal(out_t[:, :, :8], t[:, :, :8])


def test_depth_from_a_local_dpt_folder(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    from hunyuan_core.controlnet.preprocess import depth

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32,
                       patch_size=8, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
                       backbone_out_indices=[0, 1, 2, 3])
    DPTForDepthEstimation(config).eval().save_pretrained(tmp_path)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(tmp_path)
    image = hint(6, (48, 40))
    out = depth(image, tmp_path)
    assert out.mode == "RGB" and out.size == (48, 40)
    arr = np.asarray(out)
    assert np.array_equal(arr[:, :, 0], arr[:, :, 2]) and arr.max() > arr.min()
    from transformers import pipeline

    reference = pipeline("depth-estimation", model=str(tmp_path), device="cpu")(image)["depth"]
    assert np.array_equal(arr[:, :, 0], np.asarray(reference))
    with pytest.raises(hy.ModelFileError, match="no config.json"):
        depth(image, tmp_path / "nothing")


def test_cli_pairs_controlnets_and_checks_before_loading(tmp_path, capsys):
    from hunyuan_core.cli import main

    cn = make_tiny_controlnet(tmp_path / "cn.safetensors", "safetensors")
    hint(2, (64, 64)).save(tmp_path / "hint.png")
    code = main(["generate", "--model", "tiny", "--prompt", "a cat", "--controlnet", str(cn), "--width", "64",
                 "--height", "64", "--steps", "2", "--out", str(tmp_path / "out")])
    assert code == 2 and "one --control-image per --controlnet" in capsys.readouterr().err
    code = main(["generate", "--model", "tiny", "--prompt", "a cat", "--controlnet", str(tmp_path / "no.pt"),
                 "--control-image", str(tmp_path / "hint.png"), "--out", str(tmp_path / "out")])
    assert code == 2 and "not found" in capsys.readouterr().err
    code = main(["generate", "--model", "tiny", "--prompt", "a cat", "--controlnet", str(cn), "--control-image",
                 str(tmp_path / "hint.png"), "--control-strength", "0.7", "--width", "64", "--height", "64",
                 "--steps", "2", "--out", str(tmp_path / "out")])
    assert code == 0 and len(list((tmp_path / "out").glob("*.png"))) == 1


def test_the_memory_check_counts_the_controlnets_residuals(tiny_official, monkeypatch):
    import hunyuan_core.settings.validate as validate

    pipe = hy.load_pipeline(tiny_official, device="cpu")
    cfg = pipe.dit.config
    base = validate.dit_activation_bytes(cfg, torch.float32, 64, 64, 2)
    one = validate.dit_activation_bytes(cfg, torch.float32, 64, 64, 2, controlnets=1)
    tokens = 2 * (64 // 8 // cfg.patch_size) ** 2
    assert one - base == tokens * cfg.hidden_size * 4 * (cfg.depth // 2 - 1)  # one residual per copied block
    assert validate.dit_activation_bytes(cfg, torch.float32, 64, 64, 2, controlnets=3) - base == 2 * (one - base)

    class Started(Exception):
        pass

    def started():
        raise Started

    monkeypatch.setattr(validate, "free_memory", lambda device: (base + one) // 2)
    with pytest.raises(Started):  # room for the DiT alone
        pipe(PROMPT, width=64, height=64, steps=2, cancel=started)
    control = hy.Control(tiny_controlnet(), Image.new("RGB", (64, 64)))
    with pytest.raises(hy.InputError, match="64x64 px x 2 images per step needs about"):
        pipe(PROMPT, width=64, height=64, steps=2, controlnets=[control], cancel=started)
