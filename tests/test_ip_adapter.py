"""IP-Adapter: the DiT's image branch against a plain-torch transcription of the official cross-attention
(hydit/modules/attn_layers.py FlashCrossMHAModified, scaled scores, with the ``reshape(B, D, 8).transpose``
token layout of hydit/modules/models.py), the image encoder against the official VisualTransformer transcribed
here and against transformers' CLIPVisionModelWithProjection with weights assigned by hand, the official
preprocessing constants, the image-key cache, sampling, the pipeline and CLI, and the refusals.
Facts: reference/wave2/ipadapter.md."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lora_files import write_kohya
from PIL import Image
from safetensors.torch import save_file

import hunyuan_core as hy
from hunyuan_core.adapters.image_encoder import ImageEncoder, read_image_encoder_weights
from hunyuan_core.errors import InputError, ModelFileError, OutputError
from hunyuan_core.model.dit import HunyuanDiT
from hunyuan_core.tiny import make_tiny_ip_adapter, tiny_image_encoder_weights, tiny_ip_adapter_weights

OFFICIAL_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ipadapter image_transform: OpenAI CLIP constants
OFFICIAL_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_tiny_ip_adapter(tmp_path_factory.mktemp("ipa"))


@pytest.fixture(scope="module")
def ipa(files):
    return hy.load_ip_adapter(files[0], image_encoder=files[1], device="cpu")


def inputs(model, b=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    return dict(
        x=torch.randn(b, cfg.in_channels, 16, 24, generator=gen), t=torch.tensor([10.0, 500.0])[:b],
        encoder_hidden_states=torch.randn(b, cfg.text_len, cfg.text_dim, generator=gen),
        text_embedding_mask=torch.ones(b, cfg.text_len, dtype=torch.long),
        encoder_hidden_states_t5=torch.randn(b, cfg.t5_len, cfg.t5_dim, generator=gen),
        text_embedding_mask_t5=torch.ones(b, cfg.t5_len, dtype=torch.long),
    )


def unit(b, d, seed=1):
    e = torch.randn(b, d, generator=torch.Generator().manual_seed(seed))
    return e / e.norm(dim=-1, keepdim=True)


# --- the official formulas, transcribed in plain torch ------------------------------------------------------

def official_tokens(w, emb, tokens=8):
    """models.py: Linear -> reshape(B, D, 8) -> transpose(2, 1) -> LayerNorm(D) (default eps 1e-5)."""
    z = F.linear(emb, w["ip_adapter_clip_len_trans_block.weight"], w["ip_adapter_clip_len_trans_block.bias"])
    z = z.reshape(emb.shape[0], -1, tokens).transpose(2, 1).contiguous()
    return F.layer_norm(z, z.shape[-1:], w["ip_adapter_img_norm_cond.weight"], w["ip_adapter_img_norm_cond.bias"])


def official_rotary(q, cos, sin):
    """apply_rotary_emb(use_real=True) on [B, S, H, D]: x * cos + rotate_half(x) * sin, pairs (x0, x1) -> (-x1, x0)."""
    pairs = q.reshape(*q.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(q.shape)
    return q * cos[None, :, None, :] + rotated * sin[None, :, None, :]


def softmax_attention(q, k, v):
    """FlashCrossAttention on [B, S, H, D]: softmax(q k^T / sqrt(D)) v."""
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)


class OfficialCrossAttention(torch.nn.Module):
    """FlashCrossMHAModified.forward(x, y, z, t_scale, i_scale, freqs_cis_img, is_ipa=True), from raw weights."""

    def __init__(self, w, prefix, heads, y, z, cos, sin):
        super().__init__()
        self.w = {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}
        self.heads, self.y, self.z, self.cos, self.sin = heads, y, z, cos, sin

    def context_kv(self, _y):  # the DiT's keys/values are not used: this module computes its own from y and z
        return None

    image_kv = context_kv

    def forward(self, x, _kv, _rope, _image_kv, t_scale, i_scale):
        w, h = self.w, self.heads
        b, s1, dim = x.shape
        d = dim // h
        norm = lambda t, n: F.layer_norm(t, (d,), w[f"{n}.weight"], w[f"{n}.bias"], eps=1e-6)  # noqa: E731
        q = F.linear(x, w["q_proj.weight"], w["q_proj.bias"]).view(b, s1, h, d)
        k, v = F.linear(self.y, w["kv_proj.weight"], w["kv_proj.bias"]).view(b, -1, 2, h, d).unbind(dim=2)
        q = official_rotary(norm(q, "q_norm"), self.cos, self.sin)
        context = softmax_attention(q, norm(k, "k_norm"), v).reshape(b, s1, -1)
        k2, v2 = F.linear(self.z, w["kv_proj_ip_adapter.weight"], w["kv_proj_ip_adapter.bias"]).view(
            b, -1, 2, h, d).unbind(dim=2)
        context_2 = softmax_attention(q, norm(k2, "k_norm_ip_adapter"), v2).reshape(b, s1, -1)
        context = context * t_scale + context_2 * i_scale
        return F.linear(context, w["out_proj.weight"], w["out_proj.bias"])


def official_forward(dit, emb, t_scale, i_scale, **kw):
    """Our DiT with every cross-attention replaced by the transcription (the rest is checked by test_dit)."""
    from official_formulas import official_rope

    ref = copy.deepcopy(dit)
    ref._image_cache = None
    w = {k: v.detach() for k, v in ref.state_dict().items()}
    cfg = ref.config
    with torch.no_grad():
        y = ref.text_states(kw["encoder_hidden_states"], kw["text_embedding_mask"], kw["encoder_hidden_states_t5"],
                            kw["text_embedding_mask_t5"])
        z = official_tokens(w, emb, tokens=ref.ip_adapter_clip_len_trans_block.out_features // cfg.text_dim)
        h, wd = kw["x"].shape[-2:]
        cos, sin = (torch.from_numpy(a) for a in official_rope(cfg.head_dim, h * 8, wd * 8))
        for i, block in enumerate(ref.blocks):
            block.attn2 = OfficialCrossAttention(w, f"blocks.{i}.attn2.", cfg.num_heads, y, z, cos, sin)
        return ref(**kw, image_embeds=emb, t_scale=t_scale, i_scale=i_scale)


# --- the DiT's image branch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("t_scale,i_scale", [(1.0, 1.0), (1.0, 0.6), (0.5, 2.0)])
def test_forward_matches_the_official_cross_attention(dit, ipa, t_scale, i_scale):
    ipa.attach(dit)
    kw = inputs(dit)
    emb = unit(2, ipa.shape.clip_dim)
    with torch.no_grad():
        ours = dit(**kw, image_embeds=emb, t_scale=t_scale, i_scale=i_scale)
        base = dit(**kw)
    ref = official_forward(dit, emb, t_scale, i_scale, **kw)
    err = (ours - ref).abs().max().item()
    print(f"DiT with image branch vs official transcription (t_scale {t_scale}, i_scale {i_scale}): max abs {err:.2e}")
    assert err <= 1e-5
    assert (ours - base).abs().max() > 1e-2  # the branch does something


def test_image_tokens_take_every_eighth_feature(dit, ipa):
    ipa.attach(dit)
    emb = unit(3, ipa.shape.clip_dim)
    w = tiny_ip_adapter_weights()
    with torch.no_grad():
        ours = dit.image_tokens(emb)
        naive = dit.ip_adapter_img_norm_cond(dit.ip_adapter_clip_len_trans_block(emb).view(3, 8, -1))
    assert (ours - official_tokens(w, emb)).abs().max() <= 1e-6
    assert ours.shape == (3, 8, dit.config.text_dim)
    assert (ours - naive).abs().max() > 0.1  # view(B, 8, D) would be a different model


def test_i_scale_zero_and_no_embeds_compute_the_dit_without_adapter(base_dit, dit, ipa):
    kw = inputs(dit)
    with torch.no_grad():
        before = base_dit(**kw)
        ipa.attach(dit)
        assert torch.equal(dit(**kw), before)
        assert torch.equal(dit(**kw, image_embeds=unit(2, ipa.shape.clip_dim), i_scale=0.0), before)
    base_keys = set(base_dit.state_dict())
    extra = set(dit.state_dict()) - base_keys
    assert extra == set(tiny_ip_adapter_weights())  # the official names, nothing else
    assert all(torch.equal(dit.state_dict()[k], v) for k, v in base_dit.state_dict().items())


def test_attach_is_idempotent_and_another_adapter_replaces_it(dit, ipa, tmp_path):
    ipa.attach(dit)
    first = dit.blocks[0].attn2.kv_proj_ip_adapter
    ipa.attach(dit)
    assert dit.blocks[0].attn2.kv_proj_ip_adapter is first
    emb = unit(2, ipa.shape.clip_dim)
    kw = inputs(dit)
    with torch.no_grad():
        out1 = dit(**kw, image_embeds=emb)
        other_path, _ = make_tiny_ip_adapter(tmp_path, seed=5)
        other = hy.load_ip_adapter(other_path)
        other.attach(dit)
        out2 = dit(**kw, image_embeds=emb)
    assert torch.equal(dit.blocks[0].attn2.kv_proj_ip_adapter.weight, tiny_ip_adapter_weights(5)[
        "blocks.0.attn2.kv_proj_ip_adapter.weight"])
    assert (out1 - out2).abs().max() > 1e-3  # not the old adapter's cached keys


def test_image_keys_are_computed_once_per_image(dit, ipa, monkeypatch):
    ipa.attach(dit)
    calls = []
    original = type(dit.blocks[0].attn2).image_kv
    monkeypatch.setattr(type(dit.blocks[0].attn2), "image_kv", lambda self, z: calls.append(1) or original(self, z))
    kw = inputs(dit)
    emb = unit(2, ipa.shape.clip_dim)
    with torch.no_grad():
        first = dit(**kw, image_embeds=emb)
        again = dit(**kw, image_embeds=emb.clone())  # equal values, another tensor: reused
        assert len(calls) == dit.config.depth and torch.equal(first, again)
        dit(**kw, image_embeds=unit(2, ipa.shape.clip_dim, seed=9))  # a new image: rebuilt
        assert len(calls) == 2 * dit.config.depth
        dit(**kw, image_embeds=emb.double())  # other dtype in: cast to the DiT's, same values -> reused
        assert len(calls) == 3 * dit.config.depth or len(calls) == 2 * dit.config.depth


def test_weights_take_the_dits_dtype(base_dit, ipa):
    dit = copy.deepcopy(base_dit).to(torch.bfloat16)
    ipa.attach(dit)
    assert dit.ip_adapter_clip_len_trans_block.weight.dtype == torch.bfloat16
    assert ipa.weights["ip_adapter_clip_len_trans_block.weight"].dtype == torch.float16  # ipa.pt is fp16
    with torch.no_grad():
        out = dit(**inputs(dit), image_embeds=unit(2, ipa.shape.clip_dim))
    assert torch.isfinite(out).all()


def test_safetensors_with_the_official_keys_loads_the_same(files, tmp_path):
    path = tmp_path / "ipa.safetensors"
    save_file({"model." + k: v for k, v in tiny_ip_adapter_weights().items()}, path)  # a wrapper prefix too
    a, b = hy.load_ip_adapter(files[0]), hy.load_ip_adapter(path)
    assert a.shape == b.shape and set(a.weights) == set(b.weights)
    assert all(torch.equal(a.weights[k].float(), b.weights[k]) for k in a.weights)


# --- sampling and the pipeline ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tiny_official):
    return hy.load_pipeline(tiny_official, device="cpu", dtype="fp32")


def run(pipe, **kw):
    return pipe("一只猫", width=64, height=64, steps=3, seed=3, **kw).latents


def test_sample_negative_is_a_zero_embedding_and_the_window_counts(pipe, ipa, monkeypatch):
    ipa.attach(pipe.dit)
    texts = pipe.encode_prompt("一只猫")
    neg = pipe.encode_prompt(None, negative=True)
    emb = unit(1, ipa.shape.clip_dim)
    seen = []
    forward = HunyuanDiT.forward
    monkeypatch.setattr(HunyuanDiT, "forward", lambda self, *a, **k: seen.append(k.get("image_embeds")) or forward(self, *a, **k))
    common = dict(width=64, height=64, steps=4, seed=3, guidance_scale=5.0)
    with_ip = hy.sample(pipe.dit, texts, neg, **common, image_prompt=hy.ImagePrompt(emb, scale=0.8))
    rows = seen[-1]
    assert rows.shape == (2, ipa.shape.clip_dim) and torch.equal(rows[0], torch.zeros_like(rows[0]))
    assert torch.equal(rows[1], emb[0])
    seen.clear()
    plain = hy.sample(pipe.dit, texts, neg, **common)
    # 4 steps start at fractions 0, 0.25, 0.5, 0.75: start 0.25 leaves the first out, end 0.75 the last one
    seen.clear()
    windowed = hy.sample(pipe.dit, texts, neg, **common, image_prompt=hy.ImagePrompt(emb, 0.8, start=0.25, end=0.75))
    assert [e is not None for e in seen] == [False, True, True, False]
    never = hy.sample(pipe.dit, texts, neg, **common, image_prompt=hy.ImagePrompt(emb, 0.8, start=0.0, end=0.0))
    zero = hy.sample(pipe.dit, texts, neg, **common, image_prompt=hy.ImagePrompt(emb, 0.0))
    assert torch.equal(never, plain) and torch.equal(zero, plain)
    assert (with_ip - plain).abs().max() > 1e-3 and (windowed - with_ip).abs().max() > 1e-4


def test_pipeline_image_prompt_with_lora(pipe, ipa, base_dit, tmp_path):
    img = Image.new("RGB", (300, 200), (200, 30, 40))
    plain = run(pipe)
    with_ip = run(pipe, ip_adapter=ipa, ip_image=img)
    assert (with_ip - plain).abs().max() > 1e-3
    assert torch.equal(run(pipe, ip_adapter=ipa, ip_image=img, ip_scale=0.0), plain)
    assert torch.equal(run(pipe), plain)  # attached, no image: the plain DiT
    lora_path = tmp_path / "l.safetensors"
    write_kohya(lora_path, base_dit, seed=4, alpha=0.5)
    pipe.set_loras([(lora_path, 1.0)])
    try:
        both = run(pipe, ip_adapter=ipa, ip_image=img)
        lora_only = run(pipe)
    finally:
        pipe.set_loras([])
    assert (both - lora_only).abs().max() > 1e-3 and (both - with_ip).abs().max() > 1e-3
    assert torch.equal(run(pipe, ip_adapter=ipa, ip_image=img), with_ip)  # LoRA undone, image keys intact


def test_several_reference_images_average_then_renormalise(ipa):
    a, b = Image.new("RGB", (64, 80), (10, 200, 30)), Image.new("RGB", (90, 50), (220, 220, 10))
    each = ipa.image_encoder.embed([a, b])
    mean = each.mean(0, keepdim=True)
    got = ipa.encode_image([a, b])
    assert torch.allclose(got, mean / mean.norm(), atol=1e-6)
    assert torch.allclose(got.norm(), torch.tensor(1.0)) and mean.norm() < 0.999
    assert torch.allclose(ipa.encode_image(a), each[:1], atol=1e-6)


# --- the image encoder --------------------------------------------------------------------------------------

def official_visual(w, pixels, heads):
    """cn_clip VisualTransformer.forward (hydit/utils/img_clip_emb.py) with nn.MultiheadAttention, from raw weights."""
    v = {k[len("visual."):]: t.float() for k, t in w.items()}
    x = F.conv2d(pixels, v["conv1.weight"], stride=v["conv1.weight"].shape[-1])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([v["class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
    x = x + v["positional_embedding"]
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], v[f"{n}.weight"], v[f"{n}.bias"])  # noqa: E731 (eps 1e-5)
    x = ln(x, "ln_pre").permute(1, 0, 2)
    width = x.shape[-1]
    layers = len({k.split(".")[2] for k in v if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        mha = torch.nn.MultiheadAttention(width, heads)
        mha.load_state_dict({"in_proj_weight": v[p + "attn.in_proj_weight"], "in_proj_bias": v[p + "attn.in_proj_bias"],
                             "out_proj.weight": v[p + "attn.out_proj.weight"], "out_proj.bias": v[p + "attn.out_proj.bias"]})
        h = ln(x, p + "ln_1")
        x = x + mha(h, h, h, need_weights=False)[0]
        h = F.linear(ln(x, p + "ln_2"), v[p + "mlp.c_fc.weight"], v[p + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), v[p + "mlp.c_proj.weight"], v[p + "mlp.c_proj.bias"])
    x = ln(x.permute(1, 0, 2)[:, 0, :], "ln_post")
    return x @ v["proj"]


def by_hand(w, config):
    """transformers' CLIPVisionModelWithProjection with every weight copied by hand from the official names."""
    from transformers import CLIPVisionModelWithProjection

    m = CLIPVisionModelWithProjection(config).eval()
    v = {k[len("visual."):]: t.float() for k, t in w.items()}
    vm, width = m.vision_model, config.hidden_size
    with torch.no_grad():
        vm.embeddings.class_embedding.copy_(v["class_embedding"])
        vm.embeddings.patch_embedding.weight.copy_(v["conv1.weight"])
        vm.embeddings.position_embedding.weight.copy_(v["positional_embedding"])
        for mine, theirs in ((vm.pre_layrnorm, "ln_pre"), (vm.post_layernorm, "ln_post")):
            mine.weight.copy_(v[f"{theirs}.weight"]), mine.bias.copy_(v[f"{theirs}.bias"])
        for i, layer in enumerate(vm.encoder.layers):
            p = f"transformer.resblocks.{i}."
            qkv_w, qkv_b = v[p + "attn.in_proj_weight"], v[p + "attn.in_proj_bias"]
            for j, proj in enumerate((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)):
                proj.weight.copy_(qkv_w[j * width:(j + 1) * width]), proj.bias.copy_(qkv_b[j * width:(j + 1) * width])
            for mine, theirs in ((layer.self_attn.out_proj, "attn.out_proj"), (layer.layer_norm1, "ln_1"),
                                 (layer.layer_norm2, "ln_2"), (layer.mlp.fc1, "mlp.c_fc"), (layer.mlp.fc2, "mlp.c_proj")):
                mine.weight.copy_(v[p + theirs + ".weight"]), mine.bias.copy_(v[p + theirs + ".bias"])
        m.visual_projection.weight.copy_(v["proj"].t())
    return m


def test_encoder_matches_the_official_tower_and_hand_assigned_transformers(ipa):
    w = tiny_image_encoder_weights()
    enc = ipa.image_encoder
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = enc.model(pixel_values=pixels).image_embeds
        official = official_visual(w, pixels, heads=160 // 80)
        hand = by_hand(w, enc.model.config)(pixel_values=pixels).image_embeds
    e1, e2 = (ours - official).abs().max().item(), (ours - hand).abs().max().item()
    print(f"image encoder vs official VisualTransformer: {e1:.2e}; vs hand-assigned CLIPVisionModelWithProjection: {e2:.2e}")
    assert e1 <= 1e-5 and e2 <= 1e-5
    cfg = enc.model.config
    assert (cfg.hidden_act, cfg.layer_norm_eps, cfg.patch_size, cfg.image_size, cfg.num_attention_heads) == (
        "quick_gelu", 1e-5, 14, 224, 2)


def test_full_size_config_is_vit_h_14():
    from hunyuan_core.adapters.image_encoder import vision_config

    w, d = 1280, 1024  # shapes only (meta tensors): ViT-H-14.json
    shapes = {"visual.conv1.weight": (w, 3, 14, 14), "visual.positional_embedding": (257, w), "visual.proj": (w, d),
              **{f"visual.transformer.resblocks.{i}.mlp.c_fc.weight": (4 * w, w) for i in range(32)}}
    cfg = vision_config({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size, cfg.image_size,
            cfg.projection_dim, cfg.intermediate_size, cfg.hidden_act) == (1280, 32, 16, 14, 224, 1024, 5120, "quick_gelu")


def test_preprocessing_is_the_official_squash_and_normalisation(ipa):
    from hunyuan_core.adapters import image_encoder

    assert image_encoder.CLIP_MEAN == OFFICIAL_MEAN and image_encoder.CLIP_STD == OFFICIAL_STD
    img = Image.effect_mandelbrot((300, 170), (-2, -1.2, 1, 1.2), 60).convert("RGBA")
    got = ipa.image_encoder.preprocess(img)
    # torchvision: Resize((224, 224), BICUBIC) on PIL -> convert RGB -> ToTensor -> Normalize
    resized = img.resize((224, 224), Image.BICUBIC).convert("RGB")
    ref = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1) / 255
    ref = (ref - torch.tensor(OFFICIAL_MEAN).view(3, 1, 1)) / torch.tensor(OFFICIAL_STD).view(3, 1, 1)
    assert got.shape == (1, 3, 224, 224) and (got[0] - ref).abs().max() <= 1e-6
    as_tensor = ipa.image_encoder.preprocess(torch.rand(2, 3, 90, 60))
    assert as_tensor.shape == (2, 3, 224, 224)
    e = ipa.encode_image(torch.rand(1, 3, 90, 60))
    assert e.shape == (1, ipa.shape.clip_dim) and torch.allclose(e.norm(), torch.tensor(1.0))


def test_training_checkpoint_is_read_for_its_visual_tower_only_and_converted(files, ipa, tmp_path):
    visual = read_image_encoder_weights(files[1])
    assert set(visual) == set(tiny_image_encoder_weights())  # no bert.*, no module. prefix
    out = hy.convert_image_encoder(files[1], tmp_path / "clip_vision_h.safetensors")
    again = hy.load_ip_adapter(files[0], image_encoder=out, device="cpu")
    img = Image.new("RGB", (40, 40), (1, 2, 250))
    assert torch.equal(again.encode_image(img), ipa.encode_image(img))
    with pytest.raises(OutputError, match="already exists"):
        hy.convert_image_encoder(files[1], out)
    with pytest.raises(OutputError, match="would overwrite the input"):
        hy.convert_image_encoder(out, out, overwrite=True)
    ready = hy.load_ip_adapter(files[0], image_encoder=again.image_encoder.model)  # a ready module
    assert isinstance(ready.image_encoder, ImageEncoder) and torch.equal(ready.encode_image(img), ipa.encode_image(img))


# --- refusals -----------------------------------------------------------------------------------------------

def test_sd_ip_adapters_and_other_files_are_named(tmp_path, tiny_official):
    sd_file = tmp_path / "ip-adapter_sd15.safetensors"
    save_file({"image_proj.proj.weight": torch.zeros(4, 4), "ip_adapter.1.to_k_ip.weight": torch.zeros(4, 4)}, sd_file)
    with pytest.raises(ModelFileError, match="SD / SDXL IP-Adapter"):
        hy.load_ip_adapter(sd_file)
    sd_bin = tmp_path / "ip-adapter_sdxl.bin"
    torch.save({"image_proj": {"proj.weight": torch.zeros(2, 2)}, "ip_adapter": {"1.to_k_ip.weight": torch.zeros(2, 2)}},
               sd_bin)
    with pytest.raises(ModelFileError, match="SD / SDXL IP-Adapter"):
        hy.load_ip_adapter(sd_bin)
    dit_file = tiny_official / "t2i" / "model" / "pytorch_model_ema.pt"
    with pytest.raises(ModelFileError, match="looks like a Hunyuan-DiT"):
        hy.load_ip_adapter(dit_file)
    _, encoder = make_tiny_ip_adapter(tmp_path / "e")
    with pytest.raises(ModelFileError, match="CLIP model with an image tower"):
        hy.load_ip_adapter(encoder)
    with pytest.raises(ModelFileError, match="not the IP-Adapter's CLIP image encoder.*Hunyuan-DiT"):
        hy.load_ip_adapter(make_tiny_ip_adapter(tmp_path / "f")[0], image_encoder=dit_file)


def test_incomplete_adapter_is_refused(tmp_path):
    w = tiny_ip_adapter_weights()
    del w["blocks.2.attn2.k_norm_ip_adapter.bias"]
    save_file(w, tmp_path / "broken.safetensors")
    with pytest.raises(ModelFileError, match="blocks.2.attn2.k_norm_ip_adapter.bias"):
        hy.load_ip_adapter(tmp_path / "broken.safetensors")


def test_v11_and_other_shapes_are_refused_at_attach_with_the_shapes(tiny_official_v11, dit, tmp_path):
    v11 = hy.load_dit(tiny_official_v11, device="cpu", dtype="fp32")
    ipa = hy.load_ip_adapter(make_tiny_ip_adapter(tmp_path)[0])
    with pytest.raises(ModelFileError, match=r"fits a Hunyuan-DiT v1.2 with 4 blocks, width 64.*v1.0/v1.1"):
        ipa.attach(v11)
    w = {k: v for k, v in tiny_ip_adapter_weights().items() if not k.startswith("blocks.3.")}
    save_file(w, tmp_path / "three.safetensors")
    with pytest.raises(ModelFileError, match="3 blocks.*this DiT is v1.2 with 4 blocks"):
        hy.load_ip_adapter(tmp_path / "three.safetensors").attach(dit)
    assert not hasattr(dit, "ip_adapter_clip_len_trans_block")  # nothing changed


def test_bad_arguments(dit, ipa, pipe, files):
    kw = inputs(dit)
    with pytest.raises(InputError, match="ipa.attach"):
        dit(**kw, image_embeds=unit(2, 16))
    ipa.attach(dit)
    with pytest.raises(InputError, match=r"\[B, 16\]"):
        dit(**kw, image_embeds=unit(2, 12))
    with pytest.raises(InputError, match="2 rows for a batch of 1"):
        dit(**inputs(dit, b=1), image_embeds=unit(2, 16))
    with pytest.raises(InputError, match="no image encoder"):
        hy.load_ip_adapter(files[0]).encode_image(Image.new("RGB", (8, 8)))
    with pytest.raises(InputError, match="ip_image needs ip_adapter"):
        run(pipe, ip_image=Image.new("RGB", (8, 8)))
    with pytest.raises(InputError, match="ip scale"):
        run(pipe, ip_adapter=ipa, ip_image=Image.new("RGB", (8, 8)), ip_scale=float("nan"))
    with pytest.raises(InputError, match="empty"):
        ipa.encode_image(Image.new("RGB", (0, 8)))
    with pytest.raises(InputError, match="PIL images or a"):
        ipa.encode_image("cat.png")
    texts = pipe.encode_prompt("猫")
    with pytest.raises(InputError, match=r"\[1, D\] or \[2, D\]"):
        hy.sample(pipe.dit, texts, None, width=64, height=64, steps=1, guidance_scale=1.0, batch_size=2,
                  image_prompt=hy.ImagePrompt(torch.zeros(3, 16)))
    with pytest.raises(InputError, match="ip end"):
        hy.sample(pipe.dit, texts, None, width=64, height=64, steps=1, guidance_scale=1.0,
                  image_prompt=hy.ImagePrompt(torch.zeros(1, 16), start=0.6, end=0.2))


# --- CLI ----------------------------------------------------------------------------------------------------

def test_cli_generate_with_an_image_prompt_and_convert(files, tmp_path):
    """``--model tiny`` builds the fixtures' tiny weights, so the tiny adapter fits it."""
    from hunyuan_core.cli import main

    ref = tmp_path / "ref.png"
    Image.new("RGB", (50, 70), (250, 120, 0)).save(ref)
    assert main(["convert-image-encoder", str(files[1]), str(tmp_path / "enc.safetensors")]) == 0
    args = ["generate", "--model", "tiny", "--prompt", "猫", "--width", "64", "--height", "64", "--steps", "1"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--ip-adapter", str(files[0]), "--image-encoder", str(tmp_path / "enc.safetensors"),
                        "--ip-image", str(ref), "--ip-image", str(ref), "--ip-scale", "2", "--out", str(tmp_path / "ip")]) == 0
    plain, with_ip = (np.asarray(Image.open(next((tmp_path / d).glob("*.png"))), dtype=np.float32) for d in ("plain", "ip"))
    assert np.abs(plain - with_ip).max() > 0


def test_cli_checks_the_image_prompt_before_loading_the_model(files, tmp_path, capsys, monkeypatch):
    from hunyuan_core import pipeline
    from hunyuan_core.cli import main

    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: pytest.fail("the DiT was loaded"))
    args = ["generate", "--model", "tiny", "--prompt", "猫", "--out", str(tmp_path), "--ip-adapter", str(files[0])]
    assert main(args + ["--image-encoder", str(files[1])]) == 2
    assert "needs --ip-adapter, --image-encoder and at least one --ip-image" in capsys.readouterr().err
    assert main(args + ["--image-encoder", str(files[1]), "--ip-image", str(tmp_path / "none.png")]) == 2
    assert "none.png" in capsys.readouterr().err
    Image.new("RGB", (8, 8)).save(tmp_path / "r.png")
    assert main(args + ["--image-encoder", str(files[1]), "--ip-image", str(tmp_path / "r.png"), "--ip-scale", "9"]) == 2
    assert "ip scale must be a finite number in [0, 5], found 9.0" in capsys.readouterr().err
    assert main(args + ["--image-encoder", str(files[0]), "--ip-image", str(tmp_path / "r.png")]) == 2
    assert "not the IP-Adapter's CLIP image encoder (this looks like a Hunyuan-DiT IP-Adapter)" in capsys.readouterr().err
