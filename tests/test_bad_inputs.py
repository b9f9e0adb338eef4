"""Bad input gets a clear error that says what was expected and what was found, and nothing unsafe runs."""

import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

import hunyuan_core as hy


class RunsCode:
    """A pickle payload that would create a marker file if it were ever unpickled unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_missing_file(tmp_path):
    with pytest.raises(hy.ModelFileError, match="does not exist"):
        hy.load_dit(tmp_path / "nope.safetensors")
    with pytest.raises(hy.ModelFileError, match="does not exist"):
        hy.load_pipeline(tmp_path / "nope")


def test_truncated_safetensors(tiny_official, tmp_path):
    dit = hy.load_dit(tiny_official, device="cpu")
    full = tmp_path / "full.safetensors"
    save_file(dit.state_dict(), full)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(hy.ModelFileError, match="truncated"):
        hy.load_dit(cut)


def test_truncated_pt(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"a": torch.zeros(1000)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(hy.ModelFileError, match="truncated or corrupt"):
        hy.load_dit(cut)


def test_unrelated_checkpoint(tmp_path):
    path = tmp_path / "sd15_unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, path)
    with pytest.raises(hy.ModelFileError, match=r"not a Hunyuan-DiT checkpoint \(this looks like a Stable Diffusion"):
        hy.load_dit(path)
    vae = tmp_path / "sdxl_vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3), "encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}, vae)
    with pytest.raises(hy.ModelFileError, match=r"this looks like a VAE.*a Hunyuan-DiT has keys such as text_embedding_padding"):
        hy.load_dit(vae)
    odd = tmp_path / "odd.safetensors"
    save_file({"foo.bar": torch.zeros(1)}, odd)
    with pytest.raises(hy.ModelFileError, match="found 1 tensors starting with: foo.bar"):
        hy.load_dit(odd)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, this is not a model")
    with pytest.raises(hy.ModelFileError, match="not a valid safetensors file"):
        hy.load_dit(path)


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model_ema.pt"
    torch.save({"x": torch.zeros(1), "payload": RunsCode(marker)}, path)
    with pytest.raises(hy.ModelFileError, match="refused to load.*could run code"):
        hy.load_dit(path)
    raw = tmp_path / "legacy.bin"
    raw.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(hy.ModelFileError):
        hy.load_dit(raw)
    assert not marker.exists()


@pytest.fixture(scope="module")
def pipe(tiny_official):
    return hy.load_pipeline(tiny_official, device="cpu")


@pytest.mark.parametrize("w,h", [(100, 64), (64, 72), (1030, 1024)])
def test_size_not_multiple_of_16(pipe, w, h):
    with pytest.raises(hy.InputError, match="not a multiple of 16.*nearest valid size"):
        pipe("一只猫", width=w, height=h, steps=1)


def test_size_out_of_range(pipe):
    with pytest.raises(hy.InputError, match="between 64 and 4096"):
        pipe("一只猫", width=32, height=64, steps=1)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt(pipe, prompt):
    with pytest.raises(hy.InputError, match="prompt is empty"):
        pipe(prompt, steps=1, width=64, height=64)


def test_overlong_prompt_is_truncated_with_a_warning_quoting_the_cut(pipe):
    prompt = "一只戴着墨镜的柴犬在海边奔跑，" * 140  # 2,100 characters
    assert len(prompt) >= 2000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipe(prompt, width=64, height=64, steps=1)
    messages = [str(w.message) for w in caught]
    assert any("too long" in m and "BERT" in m and "mT5" in m and "柴犬在海边奔跑" in m for m in messages), messages
    assert out.images[0].size == (64, 64)


def test_unknown_sampler(pipe):
    with pytest.raises(hy.InputError, match="unknown sampler 'dpm_fast'.*ddpm"):
        pipe("一只猫", sampler="dpm_fast", width=64, height=64, steps=1)


def test_dit_only_file_is_not_a_pipeline(tiny_official, tmp_path):
    dit = hy.load_dit(tiny_official, device="cpu")
    save_file(dit.state_dict(), tmp_path / "dit.safetensors")
    with pytest.raises(hy.ModelFileError, match="is a DiT-only file; a pipeline's text encoders and VAE come from"):
        hy.load_pipeline(tmp_path / "dit.safetensors")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(hy.ModelFileError, match="not a Hunyuan-DiT model folder.*found: readme.txt"):
        hy.load_pipeline(tmp_path)
