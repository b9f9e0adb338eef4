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


def _count_reads(monkeypatch):
    """Count, per file, how often its first bytes are sniffed and its safetensors header is parsed, and how often
    a layout is detected."""
    from collections import Counter

    from hunyuan_core.formats import files, layouts

    counts = {"sniff": Counter(), "header": Counter(), "detect": Counter()}

    def counting(name, table, original):
        def wrapper(path, *args, **kwargs):
            counts[table][str(path)] += 1
            return original(path, *args, **kwargs)
        monkeypatch.setattr(files if table != "detect" else layouts, name, wrapper)

    counting("sniff_format", "sniff", files.sniff_format)
    counting("read_safetensors_header", "header", files.read_safetensors_header)
    counting("_find_model_files", "detect", layouts._find_model_files)
    return counts


@pytest.mark.parametrize("layout", ["official", "diffusers", "comfy"])
def test_a_load_detects_once_and_reads_each_file_once(layout, tiny_official, tiny_diffusers, tiny_comfy,
                                                      tiny_bert_vocab, monkeypatch):
    path = {"official": tiny_official, "diffusers": tiny_diffusers, "comfy": tiny_comfy}[layout]
    counts = _count_reads(monkeypatch)
    hy.load_pipeline(path, device="cpu", dtype=torch.float32, bert_vocab=tiny_bert_vocab if layout == "comfy" else None)
    assert sum(counts["detect"].values()) == 1
    weights = {"official": 4, "diffusers": 5, "comfy": 1}[layout]  # DiT, BERT, mT5, VAE (diffusers: 2 mT5 shards)
    assert len(counts["sniff"]) == weights, counts["sniff"]
    assert set(counts["sniff"].values()) == {1}, counts["sniff"]
    assert counts["header"] and set(counts["header"].values()) == {1}, counts["header"]


def test_load_parts_loads_only_what_is_asked_in_its_own_dtype(tiny_comfy, tiny_bert_vocab, reference):
    from hunyuan_core.loaders import load_parts

    parts = load_parts(tiny_comfy, ("dit", "vae"), device="cpu", dtype="fp32", vae_dtype=torch.bfloat16)
    assert parts.text_encoder is None
    assert {p.dtype for p in parts.dit.parameters()} == {torch.float32}
    assert {p.dtype for p in parts.vae.parameters()} == {torch.bfloat16}
    vae_only = load_parts(tiny_comfy, ["vae"], device="cpu")
    assert vae_only.dit is None and vae_only.text_encoder is None and vae_only.vae.dtype == torch.float32
    with pytest.raises(hy.InputError, match="parts must be"):
        load_parts(tiny_comfy, ("dit", "unet"))
    with pytest.raises(hy.InputError, match="variant must be one of ema, module, distill, merge"):
        load_parts(tiny_comfy, variant="auto")


def test_variant_is_a_weight_choice_and_keeps_the_detected_file(tiny_official, tmp_path):
    sd = hy.load_dit(tiny_official, device="cpu").state_dict()
    torch.save({"module": {k: v * 0 for k, v in sd.items()}, "ema": sd}, tmp_path / "deepspeed.pt")
    files = find_model_files(tmp_path / "deepspeed.pt", "module")
    assert files.layout == "dit-only" and files.variant is None  # a bare file has no weight files to choose from
    module = hy.load_dit(tmp_path / "deepspeed.pt", device="cpu", variant="module")
    assert module.state_dict()["mlp_t5.0.weight"].abs().sum() == 0
    assert find_model_files(tiny_official, "ema").variant == "ema"
    with pytest.raises(hy.InputError, match="variant must be one of"):
        hy.load_dit(tiny_official, variant="fp16")
