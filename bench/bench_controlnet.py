"""Per-step cost of a ControlNet on the CPU: our denoiser step with and without one, and diffusers' ControlNet
pipeline step (``HunyuanDiT2DControlNetModel`` + ``HunyuanDiT2DModel`` as its loop calls them) on identical weights.

    python bench/bench_controlnet.py [--size 512] [--width 384] [--repeat 5] [--threads 2]

The DiT is 40 blocks deep (so the ControlNet copies 19 of them, as the releases) at a mid-size width
(``--width``, head size 64, MLP 4x; text widths scaled with it), random weights (std 0.02), fp32; one image with
classifier-free guidance (batch 2). A step is timed as the sampler calls it; best of ``--repeat``. Printed:
ms per step for each, and the ratios (with/without: the ControlNet's extra cost; ours/diffusers). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hunyuan_core.controlnet import ControlNet, PreparedControl  # noqa: E402
from hunyuan_core.controlnet.files import diffusers_config  # noqa: E402
from hunyuan_core.formats.keys import official_to_diffusers  # noqa: E402
from hunyuan_core.model.config import DiTConfig  # noqa: E402
from hunyuan_core.model.dit import HunyuanDiT  # noqa: E402
from hunyuan_core.model.rope import rope_2d  # noqa: E402
from hunyuan_core.model.text_encoder import TextEmbeddings  # noqa: E402
from hunyuan_core.sampling.denoiser import Denoiser  # noqa: E402


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(1.0 + 0.02 * torch.randn(p.shape, generator=gen) if "norm" in name
                    else 0.02 * torch.randn(p.shape, generator=gen))
    return module.eval()


def best_ms(step, repeat: int) -> float:
    step()  # warm-up: caches, allocator
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--width", type=int, default=384, help="DiT width (hidden size)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import HunyuanDiT2DControlNetModel, HunyuanDiT2DModel

    # text widths scaled down with the DiT, so the prompt part keeps its real share of a step (small at full size)
    cfg = DiTConfig(hidden_size=args.width, num_heads=args.width // 64, mlp_hidden=4 * args.width,
                    text_dim=args.width, t5_dim=2 * args.width, pooled_dim=args.width)
    dit = randomised(HunyuanDiT(cfg), 0)
    cn = randomised(ControlNet(cfg), 1)
    h = w = args.size // 8
    gen = torch.Generator().manual_seed(2)
    texts = TextEmbeddings(torch.randn(1, cfg.text_len, cfg.text_dim, generator=gen),
                           torch.ones(1, cfg.text_len, dtype=torch.long),
                           torch.randn(1, cfg.t5_len, cfg.t5_dim, generator=gen),
                           torch.ones(1, cfg.t5_len, dtype=torch.long), ["bench"])
    x = torch.randn(1, 4, h, w, generator=gen)
    t = torch.tensor(500.0)
    control = PreparedControl(cn, torch.randn(1, 4, h, w, generator=gen), torch.ones(len(cn.blocks)))
    plain = Denoiser(dit, texts, texts, width=args.size, height=args.size, guidance_scale=6.0)
    guided = Denoiser(dit, texts, texts, width=args.size, height=args.size, guidance_scale=6.0, controls=[control])
    ours_plain = best_ms(lambda: plain(x, t), args.repeat)
    ours_cn = best_ms(lambda: guided(x, t), args.repeat)

    dcfg = {k: v for k, v in diffusers_config(cfg).items() if not k.startswith("_")}
    ref_cn = HunyuanDiT2DControlNetModel(**dcfg).eval()
    ref_cn.load_state_dict(official_to_diffusers(cn.state_dict()), strict=True)
    ref_dit = HunyuanDiT2DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=4, patch_size=2,
        hidden_size=cfg.hidden_size, num_layers=cfg.depth, mlp_ratio=cfg.mlp_hidden / cfg.hidden_size,
        learn_sigma=True, cross_attention_dim=cfg.text_dim, cross_attention_dim_t5=cfg.t5_dim,
        pooled_projection_dim=cfg.pooled_dim, text_len=cfg.text_len, text_len_t5=cfg.t5_len,
        use_style_cond_and_image_meta_size=False).eval()
    ref_dit.load_state_dict(official_to_diffusers(dit.state_dict()), strict=True)
    rope = rope_2d(cfg.head_dim, h // 2, w // 2)
    both = dict(encoder_hidden_states=torch.cat([texts.clip] * 2), text_embedding_mask=torch.cat([texts.clip_mask] * 2),
                encoder_hidden_states_t5=torch.cat([texts.t5] * 2), text_embedding_mask_t5=torch.cat([texts.t5_mask] * 2),
                image_meta_size=None, style=None, image_rotary_emb=rope, return_dict=False)
    cond2 = torch.cat([control.condition] * 2)

    def diffusers_step(with_cn: bool) -> None:
        with torch.no_grad():
            latent_in, t_in = torch.cat([x] * 2), t.expand(2)
            samples = None
            if with_cn:
                samples = ref_cn(latent_in, t_in, controlnet_cond=cond2, conditioning_scale=1.0, **both)[0]
            out = ref_dit(latent_in, t_in, controlnet_block_samples=samples, **both)[0]
            uncond, cond = out[:, :4].chunk(2)
            uncond + 6.0 * (cond - uncond)

    ref_plain = best_ms(lambda: diffusers_step(False), args.repeat)
    ref_with = best_ms(lambda: diffusers_step(True), args.repeat)
    print(f"DiT {cfg.depth} x {cfg.hidden_size} ({cfg.num_heads} heads), ControlNet {len(cn.blocks)} blocks; "
          f"{args.size}x{args.size} px ({h * w // 4} tokens), CFG batch 2, fp32, {args.threads} threads, best of {args.repeat}")
    print(f"ours      : {ours_plain:8.1f} ms/step without, {ours_cn:8.1f} ms/step with a ControlNet "
          f"(x{ours_cn / ours_plain:.2f}, +{100 * (ours_cn / ours_plain - 1):.0f} %)")
    print(f"diffusers : {ref_plain:8.1f} ms/step without, {ref_with:8.1f} ms/step with a ControlNet "
          f"(x{ref_with / ref_plain:.2f}, +{100 * (ref_with / ref_plain - 1):.0f} %)")
    print(f"ours / diffusers with a ControlNet: {ours_cn / ref_with:.2f}x   (without: {ours_plain / ref_plain:.2f}x)")


if __name__ == "__main__":
    main()
