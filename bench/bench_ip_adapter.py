"""IP-Adapter costs on the CPU: the per-step overhead of the image branch, and extracting the image encoder.

    python bench/bench_ip_adapter.py [--steps 3] [--size 256] [--skip-extract] [--ckpt-dtype fp32]

1. Per step: a mid-size DiT (12 blocks, width 704, 8 heads of 88 as the release, the release's text widths and
   8 image tokens from a 1024-d embedding), random weights, one guided step (2 rows) at ``--size`` px, the text
   context precomputed as the sampler does. Timed: the plain DiT, the DiT with the adapter attached and no image
   (must be the same), with an image (its keys/values cached, as on every step after the first) and the first
   step that fills the cache. Best of ``--steps`` wall and CPU times, the four runs taking turns; the ratios to the
   plain DiT are printed.
2. Extraction: a random checkpoint of the official ``clip_img_encoder.pt`` shape is written to a temporary folder
   (``state_dict`` with ``module.`` names: the ViT-H/14 visual tower, 632 M parameters, and a RoBERTa-large-shaped
   text tower, 326 M, in ``--ckpt-dtype``); then, each in a fresh process, ``convert_image_encoder`` (fp16 out) and
   loading the extracted file into the fp32 encoder: wall time and the process's peak resident memory (VmHWM).
   The real file (6.75 GB) holds more than these two towers (training state), which the memory-mapped read never
   touches. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hunyuan_core.adapters.ip_adapter import IPAdapter  # noqa: E402
from hunyuan_core.model.config import DiTConfig  # noqa: E402
from hunyuan_core.model.dit import HunyuanDiT  # noqa: E402
from hunyuan_core.settings.devices import DTYPES  # noqa: E402

MID = DiTConfig(depth=12, hidden_size=704, num_heads=8, mlp_hidden=3072)
VIT_H = dict(width=1280, layers=32, patch=14, positions=257, dim=1024)
ROBERTA_LARGE = dict(width=1024, layers=24, vocab=47020, positions=512)


def _random_(module: torch.nn.Module) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(1.0 + 0.02 * torch.randn(p.shape, generator=gen) if "norm" in name and name.endswith("weight")
                    else 0.02 * torch.randn(p.shape, generator=gen))
    return module


def adapter_weights(cfg: DiTConfig, clip_dim: int = 1024, tokens: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    d, w = cfg.text_dim, cfg.hidden_size
    sd = {"ip_adapter_clip_len_trans_block.weight": torch.randn(tokens * d, clip_dim, generator=gen) * clip_dim ** -0.5,
          "ip_adapter_clip_len_trans_block.bias": torch.zeros(tokens * d),
          "ip_adapter_img_norm_cond.weight": torch.ones(d), "ip_adapter_img_norm_cond.bias": torch.zeros(d)}
    for i in range(cfg.depth):
        b = f"blocks.{i}.attn2."
        sd |= {b + "kv_proj_ip_adapter.weight": torch.randn(2 * w, d, generator=gen) * 0.02,
               b + "kv_proj_ip_adapter.bias": torch.zeros(2 * w),
               b + "k_norm_ip_adapter.weight": torch.ones(cfg.head_dim), b + "k_norm_ip_adapter.bias": torch.zeros(cfg.head_dim)}
    return {k: v.half() for k, v in sd.items()}  # as ipa.pt stores them


def interleaved(runs: dict[str, callable], repeat: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each run, the runs taking turns so that a busy machine slows them alike."""
    best: dict[str, tuple[float, float]] = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def bench_step(size: int, repeat: int) -> None:
    torch.manual_seed(0)
    cfg, rows, lat = MID, 2, size // 8
    plain_dit = _random_(HunyuanDiT(MID)).eval()
    dit = copy.deepcopy(plain_dit)
    IPAdapter(adapter_weights(cfg)).attach(dit)
    x, t = torch.randn(rows, 4, lat, lat), torch.tensor([500.0] * rows)
    emb = torch.nn.functional.normalize(torch.randn(rows, 1024), dim=-1)
    emb[0] = 0  # the guided batch: zero embedding for the unconditional row
    with torch.no_grad():
        context = plain_dit.text_context(torch.randn(rows, cfg.text_len, cfg.text_dim), torch.ones(rows, cfg.text_len),
                                         torch.randn(rows, cfg.t5_len, cfg.t5_dim), torch.ones(rows, cfg.t5_len))
        same = torch.equal(plain_dit(x, t, context=context), dit(x, t, context=context))

        def first_step():
            dit._image_cache = None
            dit(x, t, context=context, image_embeds=emb)

        times = interleaved({
            "plain DiT": lambda: plain_dit(x, t, context=context),
            "adapter attached, no image": lambda: dit(x, t, context=context),
            "with image, keys cached": lambda: dit(x, t, context=context, image_embeds=emb),
            "first step (fills cache)": first_step,
        }, repeat)
    tokens = (lat // cfg.patch_size) ** 2
    print(f"per step, mid-size DiT ({cfg.depth} blocks, width {cfg.hidden_size}), {size}x{size} px ({tokens} tokens), "
          f"{rows} rows, CPU, {torch.get_num_threads()} threads, best of {repeat} interleaved "
          f"(attached without image gives the plain output: {same}):")
    base_wall, base_cpu = times["plain DiT"]
    for name, (wall, cpu) in times.items():
        print(f"  {name:27s} wall {wall * 1e3:8.1f} ms x{wall / base_wall:.3f}   CPU {cpu * 1e3:8.1f} ms x{cpu / base_cpu:.3f}")


def _rss_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_checkpoint(path: Path, dtype: torch.dtype) -> int:
    """The official training checkpoint's shape, tensor by tensor; returns the bytes of tensors written."""
    gen = torch.Generator().manual_seed(2)
    v, r = VIT_H, ROBERTA_LARGE
    w = v["width"]
    shapes = {"visual.class_embedding": (w,), "visual.positional_embedding": (v["positions"], w),
              "visual.conv1.weight": (w, 3, v["patch"], v["patch"]), "visual.ln_pre.weight": (w,),
              "visual.ln_pre.bias": (w,), "visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,),
              "visual.proj": (w, v["dim"])}
    for i in range(v["layers"]):
        b = f"visual.transformer.resblocks.{i}."
        shapes |= {b + "attn.in_proj_weight": (3 * w, w), b + "attn.in_proj_bias": (3 * w,),
                   b + "attn.out_proj.weight": (w, w), b + "attn.out_proj.bias": (w,), b + "ln_1.weight": (w,),
                   b + "ln_1.bias": (w,), b + "ln_2.weight": (w,), b + "ln_2.bias": (w,),
                   b + "mlp.c_fc.weight": (4 * w, w), b + "mlp.c_fc.bias": (4 * w,),
                   b + "mlp.c_proj.weight": (w, 4 * w), b + "mlp.c_proj.bias": (w,)}
    t = r["width"]
    shapes |= {"bert.embeddings.word_embeddings.weight": (r["vocab"], t),
               "bert.embeddings.position_embeddings.weight": (r["positions"], t), "text_projection": (t, v["dim"])}
    for i in range(r["layers"]):
        b = f"bert.encoder.layer.{i}."
        shapes |= {b + "attention.self.query.weight": (t, t), b + "attention.self.key.weight": (t, t),
                   b + "attention.self.value.weight": (t, t), b + "attention.output.dense.weight": (t, t),
                   b + "intermediate.dense.weight": (4 * t, t), b + "output.dense.weight": (t, 4 * t)}
    sd = {f"module.{k}": (torch.randn(s, generator=gen) * 0.02).to(dtype) for k, s in shapes.items()}
    torch.save({"state_dict": sd, "epoch": 10, "step": 100000}, path)
    return sum(x.numel() * x.element_size() for x in sd.values())


def _child(mode: str, src: str, out: str) -> None:
    from hunyuan_core.adapters.image_encoder import (
        build_image_encoder,
        convert_image_encoder,
        read_image_encoder_weights,
    )

    start = time.perf_counter()
    if mode == "extract":
        convert_image_encoder(src, out)
    else:
        build_image_encoder(read_image_encoder_weights(out), torch.device("cpu"), torch.float32)
    print(f"{time.perf_counter() - start:.1f} {_rss_peak_mb():.0f}")


def bench_extract(dtype: torch.dtype) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ipa-") as tmp:
        src, out = Path(tmp) / "clip_img_encoder.pt", Path(tmp) / "clip_vision_h.safetensors"
        start = time.perf_counter()
        data = write_checkpoint(src, dtype)
        print(f"random official-shape checkpoint: {src.stat().st_size / 2**30:.2f} GiB on disk "
              f"({data / 2**30:.2f} GiB of tensors, {str(dtype).replace('torch.', '')}), written in "
              f"{time.perf_counter() - start:.0f} s")
        for mode, label in (("extract", "convert_image_encoder -> fp16 .safetensors"),
                            ("load", "load the extracted tower as the fp32 encoder")):
            res = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)], capture_output=True,
                                 text=True, check=True)
            seconds, peak = res.stdout.split()[-2:]
            extra = f", file {out.stat().st_size / 2**30:.2f} GiB" if mode == "extract" else ""
            print(f"  {label}: {float(seconds):.1f} s, process peak RSS {float(peak) / 1024:.2f} GiB{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--ckpt-dtype", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not args.skip_step:
        bench_step(args.size, args.steps)
    if not args.skip_extract:
        bench_extract(DTYPES[args.ckpt_dtype])


if __name__ == "__main__":
    main()
