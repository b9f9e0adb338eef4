"""Every real file layout loads and generates the same image; DiT-only files and wrapped state dicts load."""

import pytest
import torch
from safetensors.torch import save_file

import hunyuan_core as hy
from hunyuan_core.formats.keys import official_to_diffusers
from hunyuan_core.formats.layouts import find_model_files

ARGS = dict(width=64, height=80, steps=2, seed=9)


def generate(path, **kw):
    pipe = hy.load_pipeline(path, device="cpu", dtype=torch.float32, **kw)
    return pipe("山水画，远山和小船", "模糊", **ARGS).latents


@pytest.fixture(scope="module")
def reference(tiny_official):
    return generate(tiny_official)


def test_layouts_are_detected(tiny_official, tiny_diffusers, tiny_comfy):
    assert find_model_files(tiny_official).layout == "official"
    assert find_model_files(tiny_official / "t2i").layout == "official"
    assert find_model_files(tiny_diffusers).layout == "diffusers"
    assert find_model_files(tiny_comfy).layout == "single-file"


def test_all_layouts_generate_identical_images(reference, tiny_diffusers, tiny_comfy, tiny_bert_vocab):
    # make_tiny writes the same seeded weights in every layout
    assert torch.equal(generate(tiny_diffusers), reference)
    assert torch.equal(generate(tiny_comfy, bert_vocab=tiny_bert_vocab), reference)


def test_round_trip_official_diffusers_comfy(tiny_official, tmp_path, reference, tiny_bert_vocab):
    from hunyuan_core.formats.convert import save_pipeline

    pipe = hy.load_pipeline(tiny_official, device="cpu", dtype=torch.float32)
    save_pipeline(pipe, tmp_path / "diffusers", layout="diffusers")
    again = hy.load_pipeline(tmp_path / "diffusers", device="cpu", dtype=torch.float32)
    save_pipeline(again, tmp_path / "model.safetensors", layout="comfy")
    assert torch.equal(generate(tmp_path / "diffusers"), reference)
    assert torch.equal(generate(tmp_path / "model.safetensors", bert_vocab=tiny_bert_vocab), reference)


def test_dit_only_files_with_any_prefix_and_wrapper(tiny_official, tmp_path):
    base = hy.load_dit(tiny_official, device="cpu")
    sd = base.state_dict()
    variants = {
        "plain.safetensors": sd,
        "comfy.safetensors": {f"model.diffusion_model.{k}": v for k, v in sd.items()},
        "model.safetensors": {f"model.{k}": v for k, v in sd.items()},
        "diffusers.safetensors": official_to_diffusers(sd),
    }
    for name, weights in variants.items():
        save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / name)
    torch.save({"module": {k: v * 0 for k, v in sd.items()}, "ema": sd}, tmp_path / "deepspeed.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "kohya.ckpt")
    for name in [*variants, "deepspeed.pt", "kohya.ckpt"]:
        dit = hy.load_dit(tmp_path / name, device="cpu")
        assert dit.config.version == base.config.version
        loaded = dit.state_dict()
        assert all(torch.equal(loaded[k], sd[k]) for k in sd), name
    module = hy.load_dit(tmp_path / "deepspeed.pt", device="cpu", variant="module")
    assert module.state_dict()["mlp_t5.0.weight"].abs().sum() == 0


def test_weight_variant_selection(tiny_official):
    model_dir = tiny_official / "t2i" / "model"
    ema = torch.load(model_dir / "pytorch_model_ema.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in ema.items()}, model_dir / "pytorch_model_distill.pt")
    try:
        files = find_model_files(tiny_official)
        assert files.variant == "ema" and set(files.variants) == {"ema", "distill"}
        distill = hy.load_dit(tiny_official, device="cpu", variant="distill")
        assert torch.equal(distill.state_dict()["mlp_t5.0.weight"], ema["mlp_t5.0.weight"] + 1)
        with pytest.raises(hy.ModelFileError, match="variant 'module' not found.*available: ema, distill"):
            hy.load_dit(tiny_official, variant="module")
    finally:
        (model_dir / "pytorch_model_distill.pt").unlink()


def test_dtype_and_lean_loading(tiny_official):
    dit = hy.load_dit(tiny_official, device="cpu", dtype="bf16")
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in dit.parameters())
    assert all(p.device.type == "cpu" for p in dit.parameters())
