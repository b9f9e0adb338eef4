"""DiT forward and full-pipeline time, ours vs diffusers, on identical weights in the same run (CPU by default).

Mid-size config: 12 blocks, width 512, 8 heads, real text widths (BERT 1024, mT5 2048), 512x512 px,
CFG batch 2. The pipelines share the same tiny text encoders and VAE, so the difference is the DiT and
the loop. Prints best-of-N seconds (runs interleaved; CPU time on CPU) and the ratio ours/diffusers (< 1 is faster).

    python bench/bench_speed.py [--device cuda] [--dtype fp16] [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from hunyuan_core.formats.keys import official_to_diffusers
from hunyuan_core.model.config import DiTConfig
from hunyuan_core.model.dit import HunyuanDiT
from hunyuan_core.settings.devices import DTYPES

MID = DiTConfig(depth=12, hidden_size=512, num_heads=8, mlp_hidden=2048)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(ours, theirs, device, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds for each, runs interleaved so background load hits both alike.

    On CPU the clock is the process's CPU time (all threads), which a shared machine's other tenants do not
    inflate; on GPUs it is wall time after a synchronize.
    """
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    best = [float("inf"), float("inf")]
    for fn in (ours, theirs):  # warm-up
        fn()
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            sync(device)
            t0 = clock()
            fn()
            sync(device)
            best[i] = min(best[i], clock() - t0)
    return best[0], best[1]


def make_models(device, dtype):
    from diffusers import HunyuanDiT2DModel

    torch.manual_seed(0)
    ours = HunyuanDiT(MID)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(torch.randn_like(p) * (0.02 if "norm" not in name else 1.0))
    c = MID
    theirs = HunyuanDiT2DModel(
        num_attention_heads=c.num_heads, attention_head_dim=c.head_dim, in_channels=4, patch_size=2,
        hidden_size=c.hidden_size, num_layers=c.depth, mlp_ratio=c.mlp_hidden / c.hidden_size,
        cross_attention_dim=c.text_dim, cross_attention_dim_t5=c.t5_dim, pooled_projection_dim=c.pooled_dim,
        use_style_cond_and_image_meta_size=False,
    )
    theirs.load_state_dict(official_to_diffusers(ours.state_dict()))
    return ours.to(device, dtype).eval(), theirs.to(device, dtype).eval()


def bench_forward(ours, theirs, device, dtype, size: int, repeats: int) -> None:
    from hunyuan_core.model.rope import rope_2d

    b, h = 2, size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 4, h, h, generator=g).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device)
    clip = torch.randn(b, 77, 1024, generator=g).to(device, dtype)
    t5 = torch.randn(b, 256, 2048, generator=g).to(device, dtype)
    m1, m2 = torch.ones(b, 77, device=device), torch.ones(b, 256, device=device)
    rope = tuple(r.to(device) for r in rope_2d(MID.head_dim, h // 2, h // 2))
    with torch.no_grad():
        a = ours(x, t, clip, m1, t5, m2)
        d = theirs(x, t, encoder_hidden_states=clip, text_embedding_mask=m1, encoder_hidden_states_t5=t5,
                   text_embedding_mask_t5=m2, image_rotary_emb=rope, return_dict=False)[0]
        print(f"max |ours - diffusers| = {(a.float() - d.float()).abs().max().item():.2e}")
        t_ours, t_diff = compare(
            lambda: ours(x, t, clip, m1, t5, m2),
            lambda: theirs(x, t, encoder_hidden_states=clip, text_embedding_mask=m1, encoder_hidden_states_t5=t5,
                           text_embedding_mask_t5=m2, image_rotary_emb=rope, return_dict=False),
            device, repeats,
        )
    print(f"DiT forward {size}x{size}, batch 2: ours {t_ours:.3f}s  diffusers {t_diff:.3f}s  ratio {t_ours / t_diff:.2f}")


def shared_components(device, dtype):
    """Text encoders with the real widths (BERT 1024, mT5 2048; 2 layers each) and tokenizers of the tiny
    model, and an SDXL-structured VAE with few channels; both pipelines use these same modules."""
    import tempfile

    from diffusers import AutoencoderKL
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    from hunyuan_core.formats.text_encoder_files import load_bert_tokenizer, load_mt5_tokenizer
    from hunyuan_core.model.text_encoder import BilingualTextEncoder
    from hunyuan_core.tiny import TINY_VAE, make_tiny

    root = make_tiny(tempfile.mkdtemp(prefix="hydit-bench-"), layout="official") / "t2i"
    bert_tok, mt5_tok = load_bert_tokenizer(root / "tokenizer"), load_mt5_tokenizer(root / "mt5")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(bert_tok), hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
                                intermediate_size=4096))
    mt5 = T5EncoderModel(T5Config(vocab_size=len(mt5_tok) + 12, d_model=2048, d_kv=64, num_heads=32, d_ff=5120,
                                  num_layers=2, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    text_encoder = BilingualTextEncoder(bert.to(device, dtype).eval(), bert_tok, mt5.to(device, dtype).eval(), mt5_tok)
    return text_encoder, AutoencoderKL(**TINY_VAE).to(device, dtype).eval()


def bench_pipeline(ours, theirs, device, dtype, size: int, steps: int, repeats: int) -> None:
    from diffusers import DDPMScheduler
    from diffusers import HunyuanDiTPipeline as DiffusersPipeline

    from hunyuan_core.pipeline import HunyuanDiTPipeline

    text_encoder, vae = shared_components(device, dtype)
    pipe = HunyuanDiTPipeline(ours, text_encoder, vae)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.018, beta_schedule="scaled_linear", prediction_type="v_prediction",
                          steps_offset=1, timestep_spacing="leading", clip_sample=False)
    dpipe = DiffusersPipeline(vae=vae, text_encoder=text_encoder.bert, tokenizer=text_encoder.bert_tokenizer,
                              transformer=theirs, scheduler=sched, text_encoder_2=text_encoder.mt5,
                              tokenizer_2=text_encoder.mt5_tokenizer, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
    dpipe.set_progress_bar_config(disable=True)
    prompt, neg = "一只戴着墨镜的柴犬 a shiba inu wearing sunglasses", "模糊"
    run_ours = lambda: pipe(prompt, neg, width=size, height=size, steps=steps, seed=1)  # noqa: E731
    run_diff = lambda: dpipe(prompt, negative_prompt=neg, height=size, width=size, num_inference_steps=steps,  # noqa: E731
                             guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(1),
                             use_resolution_binning=False)
    with torch.no_grad():
        t_ours, t_diff = compare(run_ours, run_diff, device, repeats)
    print(f"pipeline {size}x{size}, {steps} DDPM steps: ours {t_ours:.2f}s  diffusers {t_diff:.2f}s  ratio {t_ours / t_diff:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=[name for name in DTYPES if name != "auto"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    print(f"torch {torch.__version__}, device {device}, {args.dtype}, threads {torch.get_num_threads()}")
    ours, theirs = make_models(device, dtype)
    bench_forward(ours, theirs, device, dtype, args.size, args.repeats)
    bench_pipeline(ours, theirs, device, dtype, args.size, args.steps, args.repeats)


if __name__ == "__main__":
    main()
