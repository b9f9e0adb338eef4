"""End to end: our pipeline against diffusers' HunyuanDiTPipeline, batches, img2img, inpainting, samplers."""

import pytest
import torch

import hunyuan_core as hy
from hunyuan_core.model.vae import decode_latents
from hunyuan_core.sampling.denoiser import rescale_noise_cfg

PROMPT = "一只戴着墨镜的柴犬 a shiba inu"
NEG = "模糊"


@pytest.fixture(scope="module")
def pipe(tiny_diffusers):
    return hy.load_pipeline(tiny_diffusers, device="cpu", dtype=torch.float32)


def test_matches_diffusers_pipeline(tiny_diffusers, pipe):
    from diffusers import HunyuanDiTPipeline as Reference

    ref = Reference.from_pretrained(tiny_diffusers, torch_dtype=torch.float32, safety_checker=None,
                                    feature_extractor=None, requires_safety_checker=False)
    assert ref.scheduler.config.beta_end == pytest.approx(0.018)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    out = pipe(PROMPT, NEG, width=128, height=128, steps=4, guidance_scale=6.0, seed=7, latents=latents)
    theirs = ref(PROMPT, negative_prompt=NEG, height=128, width=128, num_inference_steps=4, guidance_scale=6.0,
                 latents=latents.clone(), generator=torch.Generator("cpu").manual_seed(7), output_type="latent",
                 use_resolution_binning=False).images
    assert out.latents.abs().mean() > 0.1
    assert (out.latents - theirs).abs().max().item() <= 1e-4
    with torch.no_grad():
        ours_px = decode_latents(pipe.vae, out.latents)
        ref_px = (ref.vae.decode(theirs / ref.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert (ours_px - ref_px).abs().max().item() <= 1e-4


def test_batch_images_equal_single_runs_with_their_seeds(pipe):
    batch = pipe(PROMPT, NEG, width=64, height=96, steps=3, seed=100, batch_size=3, sampler="euler_ancestral")
    assert batch.seeds == [100, 101, 102]
    for i in (0, 2):
        single = pipe(PROMPT, NEG, width=64, height=96, steps=3, seed=100 + i, sampler="euler_ancestral")
        assert torch.allclose(batch.latents[i : i + 1], single.latents, atol=1e-5)
    assert not torch.allclose(batch.latents[0], batch.latents[1])


def test_encodings_are_reusable(pipe):
    pos, neg = pipe.encode_prompt(PROMPT), pipe.encode_prompt(NEG, negative=True)
    a = pipe(pos, neg, width=64, height=64, steps=2, seed=3)
    b = pipe(PROMPT, NEG, width=64, height=64, steps=2, seed=3)
    assert torch.equal(a.latents, b.latents)


def test_default_negative_prompt_is_the_official_one(pipe):
    from hunyuan_core.model.text_encoder import DEFAULT_NEGATIVE_PROMPT

    a = pipe(PROMPT, None, width=64, height=64, steps=2, seed=3)
    b = pipe(PROMPT, DEFAULT_NEGATIVE_PROMPT, width=64, height=64, steps=2, seed=3)
    c = pipe(PROMPT, "完全不同的负面提示", width=64, height=64, steps=2, seed=3)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)


def test_empty_negative_prompt_is_encoded_as_given(pipe):
    """None means the official negative prompt; "" is an empty negative, as in the text-encode node."""
    from hunyuan_core.model.text_encoder import DEFAULT_NEGATIVE_PROMPT

    empty, official = pipe.encode_prompt("", negative=True), pipe.encode_prompt(None, negative=True)
    assert empty.prompts == [""] and official.prompts == [DEFAULT_NEGATIVE_PROMPT]
    assert torch.equal(empty.clip, pipe.text_encoder.encode([""]).clip)
    a = pipe(PROMPT, "", width=64, height=64, steps=2, seed=3)
    b = pipe(PROMPT, empty, width=64, height=64, steps=2, seed=3)
    c = pipe(PROMPT, None, width=64, height=64, steps=2, seed=3)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)


@pytest.mark.parametrize("sampler", hy.SAMPLERS)
def test_every_sampler_runs(pipe, sampler):
    out = pipe(PROMPT, NEG, width=64, height=64, steps=3, seed=1, sampler=sampler)
    assert out.images[0].size == (64, 64)
    assert torch.isfinite(out.latents).all()


def test_guidance_rescale_formula():
    g = torch.Generator().manual_seed(0)
    guided, cond = torch.randn(2, 4, 8, 8, generator=g) * 3, torch.randn(2, 4, 8, 8, generator=g)
    out = rescale_noise_cfg(guided, cond, 1.0)
    assert torch.allclose(out.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)), atol=1e-5)
    assert torch.equal(rescale_noise_cfg(guided, cond, 0.0), guided)


def test_img2img_strength(pipe):
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    pos, neg = pipe.encode_prompt(PROMPT), pipe.encode_prompt(NEG, negative=True)
    run = lambda s: hy.sample(pipe.dit, pos, neg, width=64, height=64, steps=10, seed=4, init_latents=init, strength=s)  # noqa: E731
    weak, mid, full = run(0.1), run(0.5), run(1.0)
    dist = lambda x: (x - init).abs().mean().item()  # noqa: E731
    assert dist(weak) < dist(mid) < dist(full)
    txt2img = hy.sample(pipe.dit, pos, neg, width=64, height=64, steps=10, seed=4)
    assert torch.allclose(full, txt2img, atol=1e-6)  # strength 1 ignores the image


def test_img2img_from_a_picture(pipe):
    src = pipe(PROMPT, NEG, width=64, height=64, steps=2, seed=11).images[0]
    out = pipe("另一只猫", NEG, width=64, height=64, steps=4, seed=12, image=src.resize((80, 80)), strength=0.5)
    plain = pipe("另一只猫", NEG, width=64, height=64, steps=4, seed=12)
    assert out.images[0].size == (64, 64)
    assert not torch.allclose(out.latents, plain.latents)


@pytest.mark.parametrize("inpaint", [False, True], ids=["img2img", "inpainting"])
def test_img2img_batch_images_equal_single_runs_with_their_seeds(pipe, inpaint):
    # the init image's VAE posterior is drawn with each picture's own seed, as a single run draws it
    src = pipe(PROMPT, NEG, width=64, height=64, steps=2, seed=11).images[0]
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0
    common = dict(width=64, height=64, steps=4, image=src, strength=0.6, mask=mask if inpaint else None)
    batch = pipe(PROMPT, NEG, seed=100, batch_size=3, **common)
    prompts = pipe([PROMPT, "另一只猫"], NEG, seed=[100, 101], **common)
    singles = [pipe(PROMPT, NEG, seed=100 + i, **common).latents for i in range(3)]
    diff = max((batch.latents[i : i + 1] - singles[i]).abs().max().item() for i in range(3))
    print(f"img2img batch of 3 vs single runs ({'inpainting' if inpaint else 'img2img'}): max abs diff {diff:.3g}")
    assert diff <= 1e-5
    assert (prompts.latents[:1] - singles[0]).abs().max().item() <= 1e-5
    assert not torch.allclose(batch.latents[1], batch.latents[0], atol=1e-3)


def test_inpainting_keeps_unmasked_latents(pipe):
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0  # repaint the right half
    pos, neg = pipe.encode_prompt(PROMPT), pipe.encode_prompt(NEG, negative=True)
    out = hy.sample(pipe.dit, pos, neg, width=64, height=64, steps=4, seed=1, init_latents=init, strength=1.0, mask=mask)
    assert torch.allclose(out[..., :3], init[..., :3], atol=1e-6)  # left latent columns untouched
    assert not torch.allclose(out[..., 5:], init[..., 5:])


def test_progress_and_cancel(pipe):
    seen = []
    pipe(PROMPT, NEG, width=64, height=64, steps=3, seed=1, progress=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    assert seen == [(1, 3, (1, 4, 8, 8)), (2, 3, (1, 4, 8, 8)), (3, 3, (1, 4, 8, 8))]

    class Stop(Exception):
        pass

    calls = []

    def cancel():
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe(PROMPT, NEG, width=64, height=64, steps=10, seed=1, cancel=cancel)
    assert len(calls) == 2  # stopped before the second step, not at the end


def test_v11_model_uses_size_conditioning(tiny_official_v11):
    p = hy.load_pipeline(tiny_official_v11, device="cpu")
    assert p.version == "1.1" and p.dit.config.size_cond and p.dit.config.style_cond
    out = p(PROMPT, NEG, width=96, height=64, steps=2, seed=0)
    assert out.images[0].size == (96, 64)
