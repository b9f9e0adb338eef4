"""LoRA: every format read from files written by tests/lora_files.py from the documented key names (reference/wave2/lora.md),
merged exactly (DiT output vs W + strength * scale * B @ A done here in plain torch), restored bit-exactly,
equal to PEFT's own merge, and refused with a reason when it does not fit."""

import copy
import os

import numpy as np
import pytest
import torch
from lora_files import (
    linears,
    low_rank,
    write_diffusers_split,
    write_dotless,
    write_kohya,
    write_peft,
    write_peft_file,
)
from PIL import Image
from safetensors.torch import save_file

import hunyuan_core as hy
from hunyuan_core.adapters import merge as merge_module
from hunyuan_core.model.dit import HunyuanDiT
from hunyuan_core.tiny import make_tiny


def reference(model, *loras):
    """An independent merge: official weights + strength * scale * B @ A on the given rows, in a fresh model;
    ``loras`` are (changes, strength) pairs."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for changes, strength in loras:
        for name, start, a, b, scale in changes:
            w = sd[f"{name}.weight"]
            w[start: start + b.shape[0]] += strength * scale * (b @ a)
    ref = HunyuanDiT(model.config)
    ref.load_state_dict(sd)
    return ref


def inputs(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    return dict(
        x=torch.randn(2, cfg.in_channels, 16, 16, generator=gen), t=torch.tensor([10.0, 500.0]),
        encoder_hidden_states=torch.randn(2, cfg.text_len, cfg.text_dim, generator=gen),
        text_embedding_mask=torch.ones(2, cfg.text_len, dtype=torch.long),
        encoder_hidden_states_t5=torch.randn(2, cfg.t5_len, cfg.t5_dim, generator=gen),
        text_embedding_mask_t5=torch.ones(2, cfg.t5_len, dtype=torch.long),
    )


def out(model):
    with torch.no_grad():
        return model(**inputs(model))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def bit_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8))
                                        if a[k].dtype == b[k].dtype else False for k in a)


# ------------------------------------------------------------------------------------------- formats
FORMATS = {
    "peft folder": lambda tmp, model: write_peft(tmp / "porcelain", model),
    "peft folder .bin": lambda tmp, model: write_peft(tmp / "jade", model, ext="bin"),
    "peft file beside its config": lambda tmp, model: write_peft_file(tmp / "p", model),
    "kohya safetensors": lambda tmp, model: write_kohya(tmp / "k.safetensors", model)[:2],
    "kohya ckpt": lambda tmp, model: write_kohya(tmp / "last.ckpt", model, alpha=0.0)[:2],
    "comfyui names": lambda tmp, model: write_kohya(tmp / "c.safetensors", model, prefix="diffusion_model.", sep=".")[:2],
    "diffusers split q/k/v": lambda tmp, model: write_diffusers_split(tmp / "d.safetensors", model),
    "comfyui-hydit dotless": lambda tmp, model: write_dotless(tmp / "adapter_model_convert.safetensors", model),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_merges_like_the_plain_torch_reference(fmt, dit, tmp_path):
    path, changes = FORMATS[fmt](tmp_path, dit)
    if fmt == "kohya ckpt":  # alpha 0 means alpha = rank: scale 1
        changes = [(n, s, a, b, 1.0) for n, s, a, b, _ in changes]
    expected, before, base = out(reference(dit, (changes, 0.7))), out(dit), weights(dit)
    lora = hy.load_lora(path)
    assert not lora.has_text_encoder
    hy.apply_loras(dit, [(lora, 0.7)])
    got = out(dit)
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - before).abs().max().item() > 1e-2  # the LoRA did change the output
    hy.apply_loras(dit, [])
    assert bit_equal(weights(dit), base)


def test_kohya_covers_every_block_linear(dit, tmp_path):
    path, changes, _ = write_kohya(tmp_path / "k.safetensors", dit)
    names = {n for n, *_ in changes}
    assert {"blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.default_modulation.1", "blocks.3.skip_linear",
            "blocks.0.attn2.kv_proj"} <= names
    lora = hy.load_lora(path)
    assert len(lora.parts["dit"]) == len(names) == 4 * 8 + 1  # 8 linears per block, skip_linear in block 3


def test_peft_merge_and_unload_equals_ours(dit, tmp_path):
    """PEFT, the producer's library, reads the official folder into our HunyuanDiT (official names) and merges."""
    import peft

    folder, _ = write_peft(tmp_path / "porcelain", dit, alpha=8)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(dit), str(folder)).merge_and_unload().state_dict()
    assert any(k.startswith("pooler.q_proj") for k in theirs)
    hy.apply_loras(dit, [(hy.load_lora(folder), 1.0)])
    ours = dit.state_dict()
    assert ours.keys() == theirs.keys()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= 1e-6


def test_two_loras_negative_strength_and_strength_zero(dit, tmp_path):
    p1, c1 = write_peft(tmp_path / "a", dit, seed=1)
    p2, c2, _ = write_kohya(tmp_path / "b.safetensors", dit, seed=2)
    a, b = hy.load_lora(p1), hy.load_lora(p2)
    base, expected = weights(dit), out(reference(dit, (c1, 0.7), (c2, -0.4)))
    hy.apply_loras(dit, [(a, 0.7), (b, -0.4)])
    assert (out(dit) - expected).abs().max().item() <= 1e-5
    hy.apply_loras(dit, [(a, 0.0), (b, 0.0)])  # strength 0 = no change at all
    assert bit_equal(weights(dit), base)


def test_same_set_does_nothing_and_a_new_set_merges_from_the_base(base_dit, dit, tmp_path, monkeypatch):
    a = hy.load_lora(write_peft(tmp_path / "a", dit, seed=1)[0])
    path, changes, _ = write_kohya(tmp_path / "b.safetensors", dit, seed=2)
    b = hy.load_lora(path)
    hy.apply_loras(dit, [(a, 0.7)])
    calls = []
    monkeypatch.setattr(merge_module, "_merge", lambda *args, **kwargs: calls.append(1))
    hy.apply_loras(dit, [(a, 0.7)])
    assert calls == []
    monkeypatch.undo()
    hy.apply_loras(dit, [(b, 0.3)])
    assert (out(dit) - out(reference(base_dit, (changes, 0.3)))).abs().max().item() <= 1e-5


@pytest.mark.parametrize("source", ["model file", "state dict"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_restore_is_bit_exact_after_50_cycles(dit, tmp_path, dtype, source):
    """From a model file, restore reads the originals back and the merge holds nothing; without one (a DiT built
    from a state dict) it subtracts the change and puts back the few values rounding lost."""
    dit = dit.to(dtype)
    if source == "state dict":
        dit.weights_file = None
    base = weights(dit)
    path, changes = write_peft(tmp_path / "a", dit, seed=1)
    a = hy.load_lora(path)
    b = hy.load_lora(write_kohya(tmp_path / "b.safetensors", dit, seed=2)[0])
    hy.apply_loras(dit, [(a, 0.7)])  # merged = the fp32 sum rounded once to the dtype (half an ulp at most)
    for name, _, down, up, scale in changes:
        exact = base[f"{name}.weight"].float() + 0.7 * scale * (up.float() @ down.float())
        rel = torch.finfo(dtype).eps / 2
        assert torch.allclose(dit.get_parameter(f"{name}.weight").float(), exact, rtol=rel * 1.01, atol=1e-7)
    fixes = []
    for i in range(50):
        hy.apply_loras(dit, [(a, 0.7), (b, 0.1 * (i % 7) - 0.3)][: 1 + i % 2])
        held = dit.__dict__[merge_module._STATE].weights.values()
        fixes.append(sum(w.index.numel() if w.index is not None else 0 for w in held))
        assert all((w.index is None) == (source == "model file") for w in held)
        if i % 3 == 0:
            hy.apply_loras(dit, [])
            assert bit_equal(weights(dit), base)
    hy.apply_loras(dit, [])
    assert bit_equal(weights(dit), base)
    changed = sum(p.numel() for n, p in dit.named_parameters() if n.endswith(".weight") and "blocks" in n)
    assert max(fixes) < changed / 3  # what undo keeps is a fraction of a copy of the weights
    assert (max(fixes) == 0) == (source == "model file")


def test_restore_reads_a_diffusers_folder_back(tiny_diffusers, tmp_path):
    """A DiT loaded from a diffusers folder: the fused Wqkv / kv_proj originals are joined from to_q/to_k/to_v again."""
    dit = hy.load_dit(tiny_diffusers, device="cpu", dtype="fp16")
    base = weights(dit)
    lora = hy.load_lora(write_peft(tmp_path / "a", dit, seed=3)[0])
    hy.apply_loras(dit, [(lora, 0.9)])
    held = dit.__dict__[merge_module._STATE].weights
    assert any(".Wqkv." in n for n in held) and any(".kv_proj." in n for n in held)
    assert all(w.index is None for w in held.values())
    hy.apply_loras(dit, [])
    assert bit_equal(weights(dit), base)


def test_weights_changed_since_loading_are_restored_to_their_own_bits(dit, tmp_path):
    """Restore gives back the weights as they were before the merge, not the file's, when the user changed one."""
    name = "blocks.0.attn1.Wqkv.weight"
    with torch.no_grad():
        dit.get_parameter(name).mul_(1.5)
    base = weights(dit)
    lora = hy.load_lora(write_peft(tmp_path / "a", dit, seed=4)[0])
    hy.apply_loras(dit, [(lora, 0.7)])
    held = dit.__dict__[merge_module._STATE].weights
    assert held[name].index is not None and held["blocks.1.attn1.Wqkv.weight"].index is None
    hy.apply_loras(dit, [])
    assert bit_equal(weights(dit), base)


def test_a_model_file_changed_on_disk_is_not_read_back(tmp_path):
    """Changed before the merge: the merge keeps its fix-ups (exact). Changed between merge and restore: the
    change is subtracted, with a warning, and the file's new content is never read into the model."""
    file = make_tiny(tmp_path / "m", layout="comfy")
    dit = hy.load_dit(file, device="cpu", dtype="fp32")
    base = weights(dit)
    lora = hy.load_lora(write_peft(tmp_path / "a", dit, seed=5)[0])
    os.utime(file, ns=(1, 1))  # as if rewritten
    hy.apply_loras(dit, [(lora, 0.7)])
    assert all(w.index is not None for w in dit.__dict__[merge_module._STATE].weights.values())
    hy.apply_loras(dit, [])
    assert bit_equal(weights(dit), base)
    dit = hy.load_dit(file, device="cpu", dtype="fp32")
    hy.apply_loras(dit, [(lora, 0.7)])
    os.utime(file, ns=(2, 2))
    with pytest.warns(UserWarning, match="changed on disk"):
        hy.apply_loras(dit, [])
    assert all((a - b).abs().max().item() < 1e-6 for a, b in zip(weights(dit).values(), base.values()))


def test_text_encoder_takes_the_te1_parts(tiny_official, tmp_path):
    pipe = hy.load_pipeline(tiny_official, device="cpu", dtype="fp32")
    bert_base = weights(pipe.text_encoder.bert)
    dit_base = weights(pipe.dit)
    path, _, te_changes = write_kohya(tmp_path / "k.safetensors", pipe.dit, text_encoder=pipe.text_encoder.bert)
    lora = hy.load_lora(path)
    assert lora.has_text_encoder and len(lora.parts["te1"]) == len(te_changes) == 2 * 6
    before = pipe.encode_prompt("一只猫").clip
    pipe.set_loras([(path, 0.7)])
    bert = pipe.text_encoder.bert.state_dict()
    for name, _, a, b, scale in te_changes:
        assert torch.allclose(bert[f"{name}.weight"], bert_base[f"{name}.weight"] + 0.7 * scale * (b @ a), atol=1e-6)
    assert (pipe.encode_prompt("一只猫").clip - before).abs().max().item() > 1e-3
    pipe.set_loras([])
    assert bit_equal(weights(pipe.text_encoder.bert), bert_base) and bit_equal(weights(pipe.dit), dit_base)
    only_dit = hy.load_lora(write_peft(tmp_path / "p", pipe.dit)[0])
    hy.apply_loras(pipe.text_encoder, [(only_dit, 0.7)])  # nothing for BERT: skipped
    assert bit_equal(weights(pipe.text_encoder.bert), bert_base)


def test_next_run_sees_a_lora_on_pooler_and_kv_proj(tiny_official, tmp_path):
    """The text context (pooled vector, per-block text K/V) is computed per run: set_loras changes the next image,
    and [] gives the first image back bit for bit."""
    pipe = hy.load_pipeline(tiny_official, device="cpu", dtype="fp32")
    run = lambda: pipe("一只猫", width=64, height=64, steps=2, seed=1).latents  # noqa: E731
    first = run()
    prompt = pipe.encode_prompt("一只猫")
    for target, only in (("q_proj", "pooler."), ("kv_proj", "")):
        folder, changes = write_peft(tmp_path / target, pipe.dit, targets=(target,), only=only)
        assert {n.rsplit(".", 1)[-1] for n, *_ in changes} == {target}
        ctx_before = pipe.dit.text_context(prompt.clip, prompt.clip_mask, prompt.t5, prompt.t5_mask)
        pipe.set_loras([(folder, 1.0)])
        ctx_after = pipe.dit.text_context(prompt.clip, prompt.clip_mask, prompt.t5, prompt.t5_mask)
        changed = ctx_after.extra if only else ctx_after.kv[0][1]
        unchanged = ctx_before.extra if only else ctx_before.kv[0][1]
        assert (changed - unchanged).abs().max().item() > 1e-5
        assert (run() - first).abs().max().item() > 1e-5
        pipe.set_loras([])
        assert torch.equal(run(), first)


# ------------------------------------------------------------------------------------------- refusals
def test_lora_for_v11_is_refused_on_v12_with_the_shapes(tiny_official_v11, dit, tmp_path):
    """A LoRA on every Linear of a v1.1 DiT (its extra_embedder takes size and style too) does not fit v1.2."""
    v11 = hy.load_dit(tiny_official_v11, device="cpu", dtype="fp32")
    sd = {}
    for i, (name, m) in enumerate(linears(v11).items()):
        sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"] = low_rank(m, i)
    save_file(sd, tmp_path / "v11.safetensors")
    lora = hy.load_lora(tmp_path / "v11.safetensors")
    hy.apply_loras(v11, [(lora, 0.5)])  # fits the model it was made for
    base = weights(dit)
    with pytest.raises(hy.ModelFileError, match=r"extra_embedder\.0.*\[256, 1632\].*is \[256, 32\]"):
        hy.apply_loras(dit, [(lora, 0.5)])
    assert bit_equal(weights(dit), base)  # nothing changed


def test_other_width_is_refused_with_the_shapes(dit, tmp_path):
    sd = {"base_model.model.blocks.0.attn1.Wqkv.lora_A.weight": torch.zeros(4, 1408),
          "base_model.model.blocks.0.attn1.Wqkv.lora_B.weight": torch.zeros(4224, 4)}
    save_file(sd, tmp_path / "big.safetensors")
    with pytest.raises(hy.ModelFileError, match=r"\[4224, 1408\] weight but this model's 'blocks.0.attn1.Wqkv.weight' is \[192, 64\]"):
        hy.apply_loras(dit, [(hy.load_lora(tmp_path / "big.safetensors"), 1.0)])


def test_unmatched_modules_are_counted_and_named(dit, tmp_path):
    path, _, _ = write_kohya(tmp_path / "k.safetensors", dit)
    extra = {f"lora_unet_blocks_{i}_attn1_Wqkv.lora_{x}.weight": torch.zeros((4, 64) if x == "down" else (192, 4))
             for i in (7, 8, 9) for x in ("down", "up")}
    from safetensors.torch import load_file

    save_file({**load_file(path), **extra}, tmp_path / "deeper.safetensors")
    with pytest.raises(hy.ModelFileError, match=r"3 of its 36 modules match nothing.*lora_unet_blocks_7_attn1_Wqkv"):
        hy.apply_loras(dit, [(hy.load_lora(tmp_path / "deeper.safetensors"), 1.0)])


@pytest.mark.parametrize("keys, found", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8),
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (8, 4)}, "an SD / SDXL LoRA"),
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 8)}, "an SD / SDXL LoRA"),
    ({"transformer.double_blocks.0.img_attn.qkv.lora_A.weight": (4, 8)}, "a Flux LoRA"),
    ({"mlp_t5.0.weight": (8, 8), "blocks.0.attn1.Wqkv.weight": (24, 8)}, "a Hunyuan-DiT"),
    ({"encoder.conv_in.weight": (8, 3)}, "a VAE"),
])
def test_files_that_are_not_hunyuan_loras_are_named(keys, found, tmp_path):
    save_file({k: torch.zeros(s) for k, s in keys.items()}, tmp_path / "x.safetensors")
    with pytest.raises(hy.ModelFileError, match=f"is {found}.*not a Hunyuan-DiT LoRA"):
        hy.load_lora(tmp_path / "x.safetensors")


def test_other_adapters_and_broken_files_are_refused(tmp_path):
    cases = {
        "dora.safetensors": ({"lora_unet_blocks_0_attn1_Wqkv.dora_scale": (1, 8)}, "DoRA"),
        "mt5.safetensors": ({"lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight": (4, 8)}, "mT5"),
        "half.safetensors": ({"lora_unet_blocks_0_attn1_Wqkv.lora_down.weight": (4, 8)}, r"has no up \(lora_B"),
        "ranks.safetensors": ({"lora_unet_blocks_0_attn1_Wqkv.lora_down.weight": (4, 8),
                               "lora_unet_blocks_0_attn1_Wqkv.lora_up.weight": (24, 3)}, r"\[rank, in\] and \[out, rank\]"),
        "foreign.safetensors": ({"lora_unet_unet_mid_0.lora_down.weight": (4, 8),
                                 "lora_unet_unet_mid_0.lora_up.weight": (8, 4)}, "not Hunyuan-DiT or BERT modules"),
    }
    for name, (keys, message) in cases.items():
        save_file({k: torch.zeros(s) for k, s in keys.items()}, tmp_path / name)
        with pytest.raises(hy.ModelFileError, match=message):
            hy.load_lora(tmp_path / name)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(hy.ModelFileError, match="expected adapter_model.safetensors"):
        hy.load_lora(tmp_path / "empty_folder")
    with pytest.raises(hy.ModelFileError, match="not found"):
        hy.load_lora(tmp_path / "missing.safetensors")


def test_apply_loras_refuses_bad_arguments(dit, tmp_path):
    lora = hy.load_lora(write_peft(tmp_path / "a", dit)[0])
    with pytest.raises(hy.InputError, match="HunyuanDiT or a BilingualTextEncoder"):
        hy.apply_loras(torch.nn.Linear(2, 2), [(lora, 1.0)])
    with pytest.raises(hy.InputError, match=r"\(LoRA, strength\) pair"):
        hy.apply_loras(dit, [("a.safetensors", 1.0)])
    with pytest.raises(hy.InputError, match="strength of LoRA 'a' must be a finite number"):
        hy.apply_loras(dit, [(lora, float("nan"))])


# ------------------------------------------------------------------------------------------- CLI
def test_cli_generate_with_loras(base_dit, tmp_path):
    """``--model tiny`` builds the same tiny weights as the fixtures, so LoRAs written for them fit."""
    from hunyuan_core.cli import lora_argument, main

    assert lora_argument("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert lora_argument("C:\\loras\\a.safetensors") == ("C:\\loras\\a.safetensors", 1.0)
    assert lora_argument("x:-0.25") == ("x", -0.25)
    folder, _ = write_peft(tmp_path / "porcelain", base_dit)
    kohya = write_kohya(tmp_path / "k.safetensors", base_dit)[0]
    args = ["generate", "--model", "tiny", "--prompt", "猫", "--width", "64", "--height", "64", "--steps", "1"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--lora", f"{folder}:0.7", "--lora", str(kohya), "--out", str(tmp_path / "lora")]) == 0
    plain, with_lora = (torch.from_numpy(np.asarray(Image.open(next((tmp_path / d).glob("*.png"))), dtype=np.float32))
                        for d in ("plain", "lora"))
    assert (plain - with_lora).abs().max() > 0


def test_cli_refuses_a_bad_lora_before_loading_the_model(tmp_path, capsys, monkeypatch):
    from hunyuan_core import pipeline
    from hunyuan_core.cli import main

    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: pytest.fail("the DiT was loaded"))
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3)}, tmp_path / "vae.safetensors")
    args = ["generate", "--model", "tiny", "--prompt", "猫", "--out", str(tmp_path)]
    assert main(args + ["--lora", str(tmp_path / "vae.safetensors")]) == 2
    assert "is a VAE (SD/SDXL autoencoder), not a Hunyuan-DiT LoRA" in capsys.readouterr().err
    assert main(args + ["--lora", f"{tmp_path / 'vae.safetensors'}:20"]) == 2
    assert "must be a finite number in [-10, 10], found 20.0" in capsys.readouterr().err
