"""The SDXL VAE: folder and LDM (all-in-one) loading, scaling, tiled decode, against diffusers' own code."""

import pytest
import torch
from safetensors.torch import save_file

from hunyuan_core.errors import InputError, ModelFileError
from hunyuan_core.formats.all_in_one import vae_to_ldm
from hunyuan_core.formats.files import read_state_dict
from hunyuan_core.formats.vae_files import (
    load_vae_from_folder,
    load_vae_from_ldm_state_dict,
    vae_config_from_ldm,
)
from hunyuan_core.model.vae import decode_latents, encode_images

SF = 0.13025


def vae_dir(ckpts):
    return ckpts / "t2i" / "sdxl-vae-fp16-fix"


@pytest.fixture(scope="module")
def vae(tiny_official):
    return load_vae_from_folder(vae_dir(tiny_official))


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 4, 24, 32, generator=torch.Generator().manual_seed(0))


def ldm_part(path):
    return {k[len("vae."):]: v for k, v in read_state_dict(path).items() if k.startswith("vae.")}


def test_decode_matches_diffusers(tiny_official, vae, latents):
    from diffusers import AutoencoderKL

    ref = AutoencoderKL.from_pretrained(vae_dir(tiny_official)).eval()
    assert ref.config.scaling_factor == vae.config.scaling_factor == SF
    with torch.no_grad():
        expected = (ref.decode(latents / SF).sample / 2 + 0.5).clamp(0, 1)
    images = decode_latents(vae, latents)
    assert images.shape == (1, 3, 192, 256) and images.dtype == torch.float32
    assert torch.equal(images, expected)
    assert 0.05 < images.std() and images.min() >= 0 and images.max() <= 1


def test_encode_matches_diffusers(tiny_official, vae):
    from diffusers import AutoencoderKL

    ref = AutoencoderKL.from_pretrained(vae_dir(tiny_official)).eval()
    images = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    z = encode_images(vae, images, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.encode(images * 2 - 1).latent_dist.sample(torch.Generator().manual_seed(2)) * SF
    assert z.shape == (1, 4, 8, 10) and torch.equal(z, expected)
    assert not torch.equal(z, encode_images(vae, images, generator=torch.Generator().manual_seed(3)))


def test_encode_with_one_generator_per_image_repeats_each_image_encoded_alone(vae):
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    pairs = encode_images(vae, images, generator=[gen(5), gen(6)])
    alone = [encode_images(vae, images[i : i + 1], generator=gen(5 + i)) for i in range(2)]
    assert (pairs - torch.cat(alone)).abs().max().item() <= 1e-5
    one_image = encode_images(vae, images[:1], generator=[gen(5), gen(6), gen(7)])  # one sample per generator
    assert one_image.shape == (3, 4, 8, 10)
    assert torch.equal(one_image[1:2], encode_images(vae, images[:1], generator=gen(6)))
    with pytest.raises(InputError, match="2 images for 3 generators"):
        encode_images(vae, images, generator=[gen(5), gen(6), gen(7)])


def test_ldm_weights_convert_to_the_folder_vae(tiny_comfy, vae, latents):
    converted = load_vae_from_ldm_state_dict(ldm_part(tiny_comfy))  # fp16 in the file, exact in fp32
    a, b = vae.state_dict(), converted.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert converted.config.scaling_factor == SF and converted.config.sample_size == 1024
    assert torch.equal(decode_latents(converted, latents), decode_latents(vae, latents))


def test_ldm_config_inference_for_sdxl():
    from diffusers import AutoencoderKL

    with torch.device("meta"):  # the real SDXL VAE's shapes, without allocating it
        sdxl = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                             block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    ldm = vae_to_ldm(sdxl.state_dict(), 4)
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1) and "decoder.up.3.block.2.conv1.weight" in ldm
    c = vae_config_from_ldm(ldm)
    assert c["block_out_channels"] == [128, 256, 512, 512] and c["layers_per_block"] == 2
    assert c["latent_channels"] == 4 and c["in_channels"] == c["out_channels"] == 3 and c["scaling_factor"] == SF


def test_tiled_decode_is_close_and_seamless(vae, latents):
    full = decode_latents(vae, latents)
    # one window covering everything is exactly the whole decode
    assert torch.equal(decode_latents(vae, latents, tiled=True, tile_size=32, tile_overlap=8), full)
    # 2x3 windows of 16 latents: per-window GroupNorm statistics differ; cross-fading keeps the error small and
    # spread out (measured: mean 0.010, max 0.12 on 0..1 images), whereas hard-edged windows (no overlap)
    # leave visible seams (max 0.57)
    blended = (decode_latents(vae, latents, tiled=True, tile_size=16, tile_overlap=4) - full).abs()
    hard = (decode_latents(vae, latents, tiled=True, tile_size=16, tile_overlap=0) - full).abs()
    assert blended.mean() < 0.02 and blended.max() < 0.25
    assert blended.max() < 0.5 * hard.max() and blended.mean() < hard.mean()


def test_old_attention_names_and_dtype(tiny_official, tmp_path, latents):
    src = vae_dir(tiny_official)
    old = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
           .replace(".to_out.0.", ".proj_attn."): v for k, v in read_state_dict(src / "diffusion_pytorch_model.safetensors").items()}
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    save_file(old, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    v = load_vae_from_folder(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in v.parameters()} == {torch.bfloat16} and not v.training
    ref = load_vae_from_folder(src, dtype=torch.bfloat16)
    assert torch.equal(decode_latents(v, latents), decode_latents(ref, latents))


def test_clear_errors(tiny_official, vae, tmp_path):
    with pytest.raises(ModelFileError, match="VAE not found.*missing"):
        load_vae_from_folder(tmp_path / "missing")
    (tmp_path / "config.json").write_text((vae_dir(tiny_official) / "config.json").read_text())
    with pytest.raises(ModelFileError, match=r"no weights in .*expected \*.safetensors or \*.bin weights\); found: config.json"):
        load_vae_from_folder(tmp_path)
    with pytest.raises(ModelFileError, match="expected LDM key 'encoder.down.0.block.0.conv1.weight'"):
        load_vae_from_ldm_state_dict(vae.state_dict())  # diffusers names are not LDM names
    with pytest.raises(InputError, match="multiples of 8"):
        encode_images(vae, torch.rand(1, 3, 60, 64))
    with pytest.raises(InputError, match="tile_overlap"):
        decode_latents(vae, torch.zeros(1, 4, 8, 8), tiled=True, tile_size=16, tile_overlap=8)


def test_bare_vae_file_with_diffusers_names(tiny_official, tmp_path):
    from safetensors.torch import save_file

    import hunyuan_core as hy

    ref = hy.load_vae(tiny_official, device="cpu")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "sdxl_vae.safetensors")
    vae = hy.load_vae(tmp_path / "sdxl_vae.safetensors", device="cpu")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(vae.decode(z).sample, ref.decode(z).sample, atol=1e-5)


def test_diffusers_named_vae_file_loads_in_its_own_names(tiny_official, tmp_path, monkeypatch):
    import diffusers.loaders.single_file_utils as single_file

    import hunyuan_core as hy

    ref = hy.load_vae(tiny_official, device="cpu")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "vae.safetensors")
    monkeypatch.setattr(single_file, "convert_ldm_vae_checkpoint", None)  # no round trip through LDM names
    vae = hy.load_vae(tmp_path / "vae.safetensors", device="cpu")
    a, b = ref.state_dict(), vae.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert vae.config.block_out_channels == ref.config.block_out_channels
    assert vae.config.layers_per_block == ref.config.layers_per_block
