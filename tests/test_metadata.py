"""PNG parameters (A1111 text + our JSON chunk) and the short weight hashes they name files by."""

import hashlib
import os

import pytest
from PIL import Image

from hunyuan_core.errors import InputError
from hunyuan_core.formats.hashes import model_hash, weights_hash
from hunyuan_core.metadata import ControlUse, GenerationParams, Resource, format_params, png_info, read_params
from hunyuan_core.model.text_encoder import DEFAULT_NEGATIVE_PROMPT


def _params(**extra):
    return GenerationParams(
        prompt="一只戴着墨镜的柴犬, at the sea", negative_prompt=None, width=1280, height=768, steps=30,
        guidance_scale=6.5, seed=7, sampler="euler", model="models/hunyuan_dit_1.2.safetensors",
        model_hash="0123456789",
        loras=[Resource("loras/porcelain", "abcdef0123", 0.8)],
        controlnets=[ControlUse("cn/canny.safetensors", "fedcba9876", 1.0, 0.0, 0.5, "edges.png")],
        version="0.1.0", **extra,
    )


def _save(tmp_path, params, name="p.png"):
    path = tmp_path / name
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=png_info(params))
    return path


def test_json_chunk_round_trips_every_field(tmp_path):
    params = _params(batch_size=2, batch_index=1, guidance_rescale=0.7, beta_end=0.02, variant="ema", dtype="fp16",
                     bert_vocab="v.txt", image="in.png", strength=0.6, mask="m.png", upscale="x4.pth")
    path = _save(tmp_path, params)
    assert read_params(path) == params
    with Image.open(path) as img:
        assert read_params(img) == params


def test_a1111_parameters_text(tmp_path):
    path = _save(tmp_path, _params())
    with Image.open(path) as img:
        text = img.info["parameters"]
    assert text == format_params(_params())
    # A1111's layout: prompt (+ LoRA tags), "Negative prompt:" line, then one "Key: value" line, quoted values
    # where they hold commas
    assert text == (
        "一只戴着墨镜的柴犬, at the sea <lora:porcelain:0.8>\n"
        f"Negative prompt: {DEFAULT_NEGATIVE_PROMPT}\n"
        "Steps: 30, Sampler: euler, CFG scale: 6.5, Seed: 7, Size: 1280x768, Model hash: 0123456789, "
        "Model: hunyuan_dit_1.2, Lora hashes: \"porcelain: abcdef0123\", "
        "ControlNet 0: \"Model: canny [fedcba9876], Weight: 1, Guidance Start: 0, Guidance End: 0.5\", "
        "Version: hunyuan-dit 0.1.0"
    )


def test_pipeline_kwargs_are_the_call_settings():
    kwargs = _params(image="in.png", strength=0.6, batch_size=3, batch_index=2).pipeline_kwargs()
    assert kwargs == dict(prompt="一只戴着墨镜的柴犬, at the sea", negative_prompt=None, width=1280, height=768, steps=30,
                          guidance_scale=6.5, seed=5, sampler="euler", schedule="default", batch_size=3, guidance_rescale=0.0,
                          beta_end=None, strength=0.6)  # the batch's seed: picture 2 of it has seed 7
    assert "strength" not in _params().pipeline_kwargs()


def test_png_without_our_chunk_is_refused(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(InputError, match="carries no Hunyuan-DiT parameters.*'hunyuan_dit'"):
        read_params(plain)
    from PIL.PngImagePlugin import PngInfo

    other = PngInfo()
    other.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a")
    a1111 = tmp_path / "a1111.png"
    Image.new("RGB", (4, 4)).save(a1111, pnginfo=other)
    with pytest.raises(InputError, match="another tool's A1111 'parameters'"):
        read_params(a1111)


@pytest.mark.parametrize("chunk, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"format": 99, "prompt": "x"}', "format 99"),
    ('{"format": 1}', "no prompt"),
    ('{"format": 1, "prompt": "x", "steps": "50"}', "'steps' should be a whole number"),
    ('{"format": 1, "prompt": "x", "seed": true}', "'seed' should be a whole number"),
    ('{"format": 1, "prompt": "x", "loras": [["a", null]]}', "'loras' should be a list of"),
    ('{"format": 1, "prompt": 5}', "'prompt' should be text"),
    ('{"format": 1, "prompt": "x", "batch_size": 2, "batch_index": 2}', "not a place in a batch of 2"),
])
def test_malformed_json_chunk_names_the_field(tmp_path, chunk, message):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("hunyuan_dit", chunk)
    path = tmp_path / "bad.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    with pytest.raises(InputError, match=message):
        read_params(path)


def test_weights_hash_is_a1111_autov2_and_follows_changes(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights v1")
    assert weights_hash(f) == hashlib.sha256(b"weights v1").hexdigest()[:10]
    f.write_bytes(b"weights v2, longer")
    os.utime(f, ns=(1, 1))  # a new (size, mtime): the cached hash is not reused
    assert weights_hash(f) == hashlib.sha256(b"weights v2, longer").hexdigest()[:10]


def test_folder_hash_covers_its_weight_files_only(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"A")
    (tmp_path / "adapter_config.json").write_text("{}")
    first = weights_hash(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 4}')
    assert weights_hash(tmp_path) == first
    (tmp_path / "adapter_model.safetensors").write_bytes(b"B")
    assert weights_hash(tmp_path) != first


def test_model_hash_is_the_dit_weights(tiny_official, tiny_comfy, tiny_diffusers):
    ema = tiny_official / "t2i" / "model" / "pytorch_model_ema.pt"
    assert model_hash(tiny_official) == hashlib.sha256(ema.read_bytes()).hexdigest()[:10]
    assert model_hash(tiny_comfy) == hashlib.sha256(tiny_comfy.read_bytes()).hexdigest()[:10]
    assert model_hash(tiny_diffusers) == weights_hash(tiny_diffusers / "transformer")
