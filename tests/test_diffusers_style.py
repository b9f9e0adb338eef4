"""The pipeline call as a diffusers user writes it: aliases, generators, output types, step-end callbacks, progress
bar and VAE tiling switches, img2img sized by its input; compared with diffusers' own HunyuanDiTPipeline."""

import numpy as np
import pytest
import torch
from PIL import Image

import hunyuan_core as hy
from hunyuan_core.errors import InputError

PROMPT = "一只戴着墨镜的柴犬 a shiba inu"

# Written for diffusers.HunyuanDiTPipeline; the test fills in only the import and the loader.
DIFFUSERS_SNIPPET = """
import torch
{import_line}

pipe = {loader}
pipe.to("cpu")
pipe.set_progress_bar_config(disable=True)
pipe.enable_vae_tiling()
generator = torch.Generator("cpu").manual_seed(0)
image = pipe(
    prompt="一个宇航员在骑马",
    negative_prompt="",
    height=64,
    width=64,
    num_inference_steps=2,
    guidance_scale=5.0,
    num_images_per_prompt=1,
    generator=generator,
    output_type="np",
    return_dict=False,
)[0]
pipe.disable_vae_tiling()
"""


@pytest.fixture(scope="module")
def pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


def never():
    raise AssertionError("sampling started")


def test_a_diffusers_snippet_runs_with_the_import_and_loader_changed(tiny_diffusers, pipe):
    code = DIFFUSERS_SNIPPET.format(import_line="from hunyuan_core import load_pipeline",
                                    loader=f"load_pipeline({str(tiny_diffusers)!r}, dtype=torch.float32)")
    first, second = {}, {}
    exec(code, first)
    exec(code, second)
    image = first["image"]
    assert isinstance(image, np.ndarray) and image.shape == (1, 64, 64, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
    assert np.array_equal(image, second["image"])  # reproducible: the generator's seed decides
    ours = pipe("一个宇航员在骑马", "", width=64, height=64, steps=2, guidance_scale=5.0, seed=0, output_type="np",
                tiled_decode=True).images
    assert np.array_equal(image, ours)


def test_a_diffusers_style_call_equals_diffusers(tiny_diffusers, pipe):
    """Same arguments, same generator: the same latents as diffusers' pipeline (noise drawn from the generator,
    DDPM step noise from it too)."""
    from diffusers import HunyuanDiTPipeline as Reference

    ref = Reference.from_pretrained(tiny_diffusers, torch_dtype=torch.float32, safety_checker=None,
                                    feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    call = dict(prompt=PROMPT, negative_prompt="模糊", height=64, width=64, num_inference_steps=3, guidance_scale=6.0,
                output_type="latent")
    theirs = ref(**call, generator=torch.Generator("cpu").manual_seed(7), use_resolution_binning=False).images
    ours = pipe(**call, generator=torch.Generator("cpu").manual_seed(7)).images
    assert ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_generators_map_to_per_image_seeds(pipe):
    settings = dict(width=64, height=64, num_inference_steps=2, num_images_per_prompt=2, output_type="latent")
    one = pipe(PROMPT, generator=torch.Generator().manual_seed(3), **settings)
    assert one.seeds == [3, 4]  # one generator: its seed is `seed`, image i uses seed + i
    listed = pipe(PROMPT, generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(9)], **settings)
    assert listed.seeds == [3, 9]
    single = pipe(PROMPT, width=64, height=64, steps=2, seed=9, output_type="latent")
    assert torch.equal(listed.latents[0], one.latents[0])
    assert torch.allclose(listed.latents[1:], single.latents, atol=1e-5)
    drawn = torch.Generator().manual_seed(3)
    torch.randn(5, generator=drawn)  # its state does not matter, only the seed it was made with
    assert torch.equal(pipe(PROMPT, generator=drawn, **settings).latents, one.latents)
    with pytest.raises(InputError, match="3 seeds \\(or generators\\) for 2 images"):
        pipe(PROMPT, generator=[torch.Generator().manual_seed(i) for i in range(3)], **settings)


@pytest.mark.parametrize("ours, theirs, message", [
    (dict(steps=3), dict(num_inference_steps=4), "steps=3 and its diffusers alias num_inference_steps=4 disagree"),
    (dict(batch_size=1), dict(num_images_per_prompt=2), "batch_size=1 and its diffusers alias num_images_per_prompt=2"),
    (dict(seed=5), dict(generator=torch.Generator().manual_seed(6)), "seed=5 and its diffusers alias generator=6"),
])
def test_an_alias_and_our_name_that_disagree_are_refused(pipe, ours, theirs, message):
    with pytest.raises(InputError, match=message):
        pipe(PROMPT, width=64, height=64, cancel=never, **ours, **theirs)


def test_an_alias_and_our_name_that_agree_are_fine(pipe):
    a = pipe(PROMPT, width=64, height=64, steps=2, num_inference_steps=2, seed=4,
             generator=torch.Generator().manual_seed(4), output_type="latent")
    b = pipe(PROMPT, width=64, height=64, steps=2, seed=4, output_type="latent")
    assert torch.equal(a.latents, b.latents)


def test_output_types_and_return_dict(pipe):
    settings = dict(width=64, height=64, steps=1, seed=2)
    pil = pipe(PROMPT, **settings)
    as_np = pipe(PROMPT, output_type="np", **settings).images
    as_pt = pipe(PROMPT, output_type="pt", **settings).images
    latent = pipe(PROMPT, output_type="latent", **settings)
    assert isinstance(pil.images[0], Image.Image) and as_np.shape == (1, 64, 64, 3) and as_pt.shape == (1, 3, 64, 64)
    assert np.array_equal(as_np, as_pt.permute(0, 2, 3, 1).numpy())
    assert np.abs(np.asarray(pil.images[0], dtype=np.float32) / 255 - as_np[0]).max() <= 1 / 255 + 1e-6
    assert torch.equal(latent.images, pil.latents) and torch.equal(latent.latents, pil.latents)
    images, seeds, latents = pipe(PROMPT, return_dict=False, **settings)
    assert isinstance(images[0], Image.Image) and seeds == [2] and torch.equal(latents, pil.latents)
    with pytest.raises(InputError, match="output_type must be one of pil, np, pt, latent; found 'png'"):
        pipe(PROMPT, output_type="png", cancel=never, **settings)


def test_callback_on_step_end_sees_and_replaces_the_latents(pipe):
    seen = []

    def callback(p, i, t, kwargs):
        assert p is pipe
        seen.append((i, int(t), tuple(kwargs["latents"].shape)))
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 2 else {}

    out = pipe(PROMPT, width=64, height=64, steps=3, seed=1, output_type="latent", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents"])
    assert [i for i, _, _ in seen] == [0, 1, 2] and all(shape == (1, 4, 8, 8) for _, _, shape in seen)
    assert seen[0][1] > seen[1][1] > seen[2][1]  # the timesteps, high noise first
    assert torch.equal(out.latents, torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="callback_on_step_end_tensor_inputs may name latents; found \\['prompt_embeds'\\]"):
        pipe(PROMPT, width=64, height=64, callback_on_step_end=callback,
             callback_on_step_end_tensor_inputs=["prompt_embeds"], cancel=never)


def test_progress_bar_by_default_and_set_progress_bar_config(pipe, capsys):
    reported = []
    pipe(PROMPT, width=64, height=64, steps=2, output_type="latent", progress=lambda i, n, x: reported.append(i))
    err = capsys.readouterr().err
    assert "sampling" in err and "2/2" in err and "[00:" in err  # tqdm: count, elapsed
    assert reported == [1, 2]  # a host's own progress callback still runs beside the bar
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe(PROMPT, width=64, height=64, steps=2, output_type="latent")
        assert "sampling" not in capsys.readouterr().err
    finally:
        pipe.set_progress_bar_config()


def test_enable_and_disable_vae_tiling(pipe, monkeypatch):
    import hunyuan_core.pipeline as pipeline

    tiled = []
    decode = pipeline.decode_latents
    monkeypatch.setattr(pipeline, "decode_latents", lambda vae, lat, tiled: tiled_calls(vae, lat, tiled))

    def tiled_calls(vae, lat, flag):
        tiled.append(flag)
        return decode(vae, lat, tiled=flag)

    settings = dict(width=64, height=64, steps=1, seed=2)
    pipe(PROMPT, **settings)
    pipe.enable_vae_tiling()
    try:
        pipe(PROMPT, **settings)
        pipe(PROMPT, tiled_decode=False, **settings)  # the call's own choice wins
    finally:
        pipe.disable_vae_tiling()
    pipe(PROMPT, **settings)
    assert tiled == [False, True, False, False]


def test_img2img_takes_the_input_size(pipe, recwarn):
    src = pipe(PROMPT, width=80, height=64, steps=1, seed=3).images[0]
    settings = dict(steps=2, strength=0.5, seed=4)
    assert pipe("另一只猫", image=src, **settings).images[0].size == (80, 64)
    assert not [w for w in recwarn if "resized" in str(w.message)]
    with pytest.warns(UserWarning, match="the input image is 90x70; it is resized to 96x64"):
        out = pipe("另一只猫", image=src.resize((90, 70)), **settings)
    assert out.images[0].size == (96, 64)
    assert pipe("另一只猫", image=src, width=64, height=64, **settings).images[0].size == (64, 64)  # given sizes win
    as_tensor = torch.rand(1, 3, 64, 80)
    assert pipe("另一只猫", image=as_tensor, output_type="pt", **settings).images.shape == (1, 3, 64, 80)
