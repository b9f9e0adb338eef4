"""make_tiny writes complete models in the real layouts, readable by diffusers/transformers themselves."""

import json

import pytest
import torch

from hunyuan_core.errors import InputError
from hunyuan_core.formats.files import read_state_dict
from hunyuan_core.formats.keys import official_to_diffusers
from hunyuan_core.model.versions import VERSION_DEFAULTS
from hunyuan_core.tiny import make_tiny


def test_official_tree(tiny_official, tiny_official_v11):
    t2i = tiny_official / "t2i"
    dit = read_state_dict(t2i / "model" / "pytorch_model_ema.pt")
    assert dit["blocks.0.attn1.Wqkv.weight"].shape == (192, 64) and "style_embedder.weight" not in dit
    v11 = read_state_dict(tiny_official_v11 / "t2i" / "model" / "pytorch_model_ema.pt")
    assert v11["style_embedder.weight"].shape == (1, 64) and v11["extra_embedder.0.weight"].shape[1] == 32 + 1536 + 64
    clip = read_state_dict(t2i / "clip_text_encoder" / "pytorch_model.bin")
    assert any(k.startswith("visual.") for k in clip) and "bert.embeddings.word_embeddings.weight" in clip
    mt5 = read_state_dict(t2i / "mt5" / "pytorch_model.bin")  # full encoder-decoder, like google/mt5-xl
    assert any(k.startswith("decoder.") for k in mt5) and "lm_head.weight" in mt5
    assert json.loads((t2i / "mt5" / "config.json").read_text())["model_type"] == "mt5"
    for name in ("tokenizer/vocab.txt", "mt5/spiece.model", "sdxl-vae-fp16-fix/config.json",
                 "sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors"):
        assert (t2i / name).is_file()


def test_diffusers_folder_loads_in_diffusers(tiny_official, tiny_diffusers):
    from diffusers import DDPMScheduler, HunyuanDiT2DModel

    model = HunyuanDiT2DModel.from_pretrained(tiny_diffusers / "transformer")
    official = official_to_diffusers(read_state_dict(tiny_official / "t2i" / "model" / "pytorch_model_ema.pt"))
    sd = model.state_dict()
    assert sd.keys() == official.keys() and all(torch.equal(sd[k], official[k]) for k in sd)
    sched = DDPMScheduler.from_pretrained(tiny_diffusers / "scheduler")
    assert sched.config.prediction_type == "v_prediction" and sched.config.beta_schedule == "scaled_linear"
    assert sched.config.beta_end == VERSION_DEFAULTS["1.2"].beta_end
    index = json.loads((tiny_diffusers / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanDiTPipeline"
    assert json.loads((tiny_diffusers / "text_encoder_2" / "model.safetensors.index.json").read_text())["weight_map"]


def test_comfy_file_keys(tiny_comfy, tiny_official, tiny_bert_vocab):
    sd = read_state_dict(tiny_comfy)
    groups = {k.split(".")[0] for k in sd}
    assert groups == {"model", "vae", "text_encoders"}
    assert "model.diffusion_model.mlp_t5.0.weight" in sd and "vae.encoder.down.0.block.0.conv1.weight" in sd
    assert "text_encoders.hydit_clip.transformer.bert.encoder.layer.0.attention.self.query.weight" in sd
    assert "text_encoders.mt5xl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight" in sd
    assert not any(k.startswith(("text_encoders.hydit_clip.transformer.visual", "text_encoders.mt5xl.transformer.decoder")) for k in sd)
    spiece = sd.pop("text_encoders.mt5xl.spiece_model")
    assert spiece.dtype == torch.uint8
    assert spiece.numpy().tobytes() == (tiny_official / "t2i" / "mt5" / "spiece.model").read_bytes()
    assert {v.dtype for v in sd.values()} == {torch.float16}
    official = read_state_dict(tiny_official / "t2i" / "model" / "pytorch_model_ema.pt")
    assert all(torch.equal(sd[f"model.diffusion_model.{k}"].float(), v) for k, v in official.items())
    assert tiny_bert_vocab.read_text() == (tiny_official / "t2i" / "tokenizer" / "vocab.txt").read_text()


def test_seeded_and_validated(tmp_path, tiny_official):
    again = make_tiny(tmp_path / "a", "official", seed=0)
    other = make_tiny(tmp_path / "b", "official", seed=1)
    name = "t2i/model/pytorch_model_ema.pt"
    ref = read_state_dict(tiny_official / name)
    assert all(torch.equal(v, read_state_dict(again / name)[k]) for k, v in ref.items())
    assert not torch.equal(ref["x_embedder.proj.weight"], read_state_dict(other / name)["x_embedder.proj.weight"])
    with pytest.raises(InputError, match="layout"):
        make_tiny(tmp_path, "onnx")
    with pytest.raises(InputError, match="version"):
        make_tiny(tmp_path, "official", version="2.0")
