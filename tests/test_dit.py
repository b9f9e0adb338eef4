"""The DiT against code nobody here wrote: diffusers' HunyuanDiT2DModel and the official RoPE formula."""

import numpy as np
import pytest
import torch
from official_formulas import official_apply_rotary, official_rope

from hunyuan_core.formats.keys import diffusers_to_official, official_to_diffusers, to_official
from hunyuan_core.model.config import DiTConfig
from hunyuan_core.model.dit import HunyuanDiT
from hunyuan_core.model.rope import apply_rope, rope_2d, rope_freqs
from hunyuan_core.settings.sizes import PRESETS

TINY = dict(depth=6, hidden_size=64, num_heads=2, mlp_hidden=160, text_dim=32, t5_dim=48, pooled_dim=40)


def random_dit(size_cond: bool, seed: int = 0) -> HunyuanDiT:
    torch.manual_seed(seed)
    dit = HunyuanDiT(DiTConfig(**TINY, size_cond=size_cond, style_cond=size_cond))
    with torch.no_grad():
        for name, p in dit.named_parameters():
            p.copy_(torch.randn_like(p) * (0.08 if "norm" not in name else 1.0))
    return dit.eval()


def diffusers_twin(dit: HunyuanDiT):
    from diffusers import HunyuanDiT2DModel

    c = dit.config
    twin = HunyuanDiT2DModel(
        num_attention_heads=c.num_heads, attention_head_dim=c.head_dim, in_channels=c.in_channels,
        patch_size=c.patch_size, hidden_size=c.hidden_size, num_layers=c.depth,
        mlp_ratio=c.mlp_hidden / c.hidden_size, learn_sigma=True, cross_attention_dim=c.text_dim,
        cross_attention_dim_t5=c.t5_dim, pooled_projection_dim=c.pooled_dim, text_len=c.text_len,
        text_len_t5=c.t5_len, use_style_cond_and_image_meta_size=c.size_cond, sample_size=16,
    )
    twin.load_state_dict(official_to_diffusers(dit.state_dict()), strict=True)
    return twin.eval()


def inputs(c: DiTConfig, h: int, w: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b = 2
    clip_mask = torch.zeros(b, c.text_len, dtype=torch.long)
    clip_mask[0, :9] = 1
    clip_mask[1, :30] = 1
    t5_mask = torch.zeros(b, c.t5_len, dtype=torch.long)
    t5_mask[0, :12] = 1
    t5_mask[1, :40] = 1
    return dict(
        x=torch.randn(b, 4, h // 8, w // 8, generator=g),
        t=torch.tensor([999.0, 321.0]),
        encoder_hidden_states=torch.randn(b, c.text_len, c.text_dim, generator=g),
        text_embedding_mask=clip_mask,
        encoder_hidden_states_t5=torch.randn(b, c.t5_len, c.t5_dim, generator=g),
        text_embedding_mask_t5=t5_mask,
        image_meta_size=torch.tensor([[1024.0, 1024.0, w, h, 0.0, 0.0]] * b) if c.size_cond else None,
        style=torch.zeros(b, dtype=torch.long) if c.style_cond else None,
    )


@pytest.mark.parametrize("size_cond", [False, True], ids=["v1.2", "v1.1"])
@pytest.mark.parametrize("hw", [(128, 128), (96, 160), (160, 96)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_matches_diffusers(size_cond, hw):
    h, w = hw
    dit = random_dit(size_cond)
    twin = diffusers_twin(dit)
    a = inputs(dit.config, h, w)
    cos, sin = (torch.from_numpy(v) for v in official_rope(dit.config.head_dim, h, w))
    with torch.no_grad():
        ours = dit(**a)
        theirs = twin(
            a["x"], a["t"], encoder_hidden_states=a["encoder_hidden_states"],
            text_embedding_mask=a["text_embedding_mask"], encoder_hidden_states_t5=a["encoder_hidden_states_t5"],
            text_embedding_mask_t5=a["text_embedding_mask_t5"], image_meta_size=a["image_meta_size"],
            style=a["style"], image_rotary_emb=(cos, sin), return_dict=False,
        )[0]
    assert ours.shape == (2, 8, h // 8, w // 8)
    assert ours.abs().mean() > 0.2  # a real signal, not zeros
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size_cond", [False, True], ids=["v1.2", "v1.1"])
def test_precomputed_text_context_gives_the_same_output(size_cond):
    dit = random_dit(size_cond)
    a = inputs(dit.config, 96, 128)
    with torch.no_grad():
        ctx = dit.text_context(a["encoder_hidden_states"], a["text_embedding_mask"], a["encoder_hidden_states_t5"],
                               a["text_embedding_mask_t5"], a["image_meta_size"], a["style"])
        assert torch.equal(dit(**a), dit(a["x"], a["t"], context=ctx))


def test_rope_inside_forward_is_the_official_one():
    dit = random_dit(False)
    a = inputs(dit.config, 96, 160)
    cos, sin = (torch.from_numpy(v) for v in official_rope(dit.config.head_dim, 96, 160))
    with torch.no_grad():
        assert torch.allclose(dit(**a), dit(**a, image_rotary_emb=(cos, sin)), atol=1e-6)


@pytest.mark.parametrize("wh", PRESETS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rope_matches_official_formula(wh):
    w, h = wh
    cos, sin = rope_2d(88, h // 16, w // 16)
    ref_cos, ref_sin = official_rope(88, h, w)
    assert cos.shape == (h // 16 * w // 16, 88)
    np.testing.assert_allclose(cos.numpy(), ref_cos, atol=2e-6)
    np.testing.assert_allclose(sin.numpy(), ref_sin, atol=2e-6)


def test_rope_rotation_matches_official_rotate_half():
    cos, sin = official_rope(88, 768, 1280)
    x = np.random.default_rng(0).standard_normal((2, cos.shape[0], 3, 88)).astype(np.float32)  # [B, S, H, D]
    ref = official_apply_rotary(x, cos, sin)
    ours = apply_rope(torch.from_numpy(x).transpose(1, 2), rope_freqs(torch.from_numpy(cos), torch.from_numpy(sin)))
    np.testing.assert_allclose(ours.transpose(1, 2).numpy(), ref, atol=1e-5)


def test_rope_width_coordinate_first():
    # 768x1280 (HxW): columns span the whole box (0..32), rows only 6..25; dims 0-43 follow the column.
    cos, _ = rope_2d(88, 48, 80)
    angles0 = torch.acos(cos[:, 0].clamp(-1, 1)).view(48, 80)
    assert torch.allclose(angles0[0], angles0[-1])  # same column -> same first-half angle on every row
    assert not torch.allclose(angles0[:, 0], angles0[:, -1])


def test_key_maps_round_trip_and_swap_norms():
    dit = random_dit(True)
    sd = dit.state_dict()
    ds = official_to_diffusers(sd)
    assert torch.equal(ds["blocks.0.norm3.weight"], sd["blocks.0.norm2.weight"])  # FFN pre-norm
    shift, scale = sd["final_layer.adaLN_modulation.1.weight"].chunk(2)
    assert torch.equal(ds["norm_out.linear.weight"], torch.cat([scale, shift]))
    back = diffusers_to_official(ds)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    comfy = {f"model.diffusion_model.{k}": v for k, v in sd.items()} | {"vae.decoder.conv_in.weight": torch.zeros(1)}
    assert to_official(comfy).keys() == sd.keys()
    assert to_official({f"model.{k}": v for k, v in ds.items()}).keys() == sd.keys()


def test_config_inferred_from_weights():
    for size_cond in (False, True):
        dit = random_dit(size_cond)
        assert DiTConfig.from_state_dict(dit.state_dict()) == dit.config


def test_fp16_layernorm_does_not_overflow():
    from hunyuan_core.model.dit import FP32LayerNorm

    ln = FP32LayerNorm(64, eps=1e-6).half()
    x = (torch.randn(1, 4, 64) * 1e4).half()  # squares overflow fp16
    y = ln(x)
    ref = torch.nn.functional.layer_norm(x.float(), (64,), eps=1e-6)
    assert y.dtype == torch.float16
    assert (y.float() - ref).abs().max() < 1e-2
