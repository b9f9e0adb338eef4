"""The memory modes at full size: computed peaks on any machine, and on a CUDA GPU the measured ones with speed.

Always (CPU, no weights): the v1.2 DiT, BERT, mT5-XL encoder and SDXL VAE are built on the meta device and
one 1024² image (CFG batch 2) goes through the pipeline's placement in each mode -- the same visits, block
hooks and residency log as on a GPU, moving meta tensors. The peak per mode is the largest resident weight
total of a stage plus that stage's activation estimate (DiT: ``dit_activation_bytes`` + the text K/V; VAE:
``decode_bytes``, tiled when a GPU would choose it). Also the offload modes' time cost on the tiny model (CPU:
moves are no copies there, so this is the scheduling overhead only).

With CUDA (<= 5 min on one GPU): full-size random weights; seconds per step at 1024² CFG batch 2 and per
50-step image for each mode and storage (fp16, bf16, fp8 e4m3fn in fp16), peak
``torch.cuda.max_memory_allocated`` per mode for the whole pipeline, the SDPA kernel the profiler saw,
fp16 vs fp32 DiT outputs (finite, relative error), the ``torch.compile`` speed-up and MFU.

    python bench/gpu_check.py [--out bench_out] [--steps 4]

Writes one JSON (``gpu_check_00001_.json``, never replacing an earlier one) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hunyuan_core.model.config import DiTConfig
from hunyuan_core.model.dit import HunyuanDiT
from hunyuan_core.model.fp8 import store_fp8
from hunyuan_core.model.text_encoder import CLIP_LENGTH, T5_LENGTH, BilingualTextEncoder
from hunyuan_core.model.vae import decode_bytes, decode_latents, decode_needs_tiles
from hunyuan_core.outputs import save_new
from hunyuan_core.pipeline import HunyuanDiTPipeline
from hunyuan_core.placement import COMPONENTS
from hunyuan_core.settings.validate import dit_activation_bytes

SIZE, ROWS = 1024, 2  # 1024² with classifier-free guidance: two rows per DiT step
TARGETS_GB = {"default": 11, "model": 6, "blocks": 3, "model+fp8": 4}
MODES = {"default": (None, None), "model": ("model", None), "blocks": ("blocks", None),
         "model+fp8": ("model", torch.float8_e4m3fn), "blocks+fp8": ("blocks", torch.float8_e4m3fn)}
DENSE_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "4090": 165, "3090": 71, "A10": 125}
GB = 1e9


def full_size_pipeline(device: torch.device, dtype: torch.dtype) -> HunyuanDiTPipeline:
    """v1.2 shapes: DiT-g/2, BERT-large (vocab 47020, no pooler), mT5-XL encoder, SDXL VAE. On the meta device
    as they are; elsewhere with random weights (speed and memory do not depend on the values)."""
    from diffusers import AutoencoderKL
    from diffusers.utils import logging as diffusers_logging
    from transformers import BertConfig, BertModel, MT5Config, MT5EncoderModel

    from hunyuan_core.model.materialise import materialise_buffers

    with torch.device("meta"):
        dit = HunyuanDiT(DiTConfig())
        bert = BertModel(BertConfig(vocab_size=47020, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                    intermediate_size=4096), add_pooling_layer=False)
        mt5 = MT5EncoderModel(MT5Config(vocab_size=250112, d_model=2048, d_kv=64, num_heads=32, d_ff=5120,
                                        num_layers=24, feed_forward_proj="gated-gelu"))
        vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4)
    models = (dit, bert, mt5, vae)
    diffusers_logging.set_verbosity_error()  # its advice on casting a VAE with to() is for pretrained ones
    for model in models:
        model.to(dtype=dtype).requires_grad_(False).eval()
        if device.type != "meta":
            model.to_empty(device=device)
            for module in model.modules():  # buffers (BERT's position and token-type ids) as a loader makes them
                module._buffers.update({k: b.to("meta") for k, b in module._buffers.items() if b is not None})
            materialise_buffers(model, device)
            generator = torch.Generator(device).manual_seed(0)
            for name, p in model.named_parameters():
                if p.ndim == 1 and "norm" in name:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=generator)
    return HunyuanDiTPipeline(dit, BilingualTextEncoder(bert, None, mt5, None), vae)  # tokenizers: ids are made up


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_image(pipe: HunyuanDiTPipeline, steps: int, on_step=None) -> dict[str, int]:
    """One 1024² image through the placement's stages (text encoders, ``steps`` guided DiT steps, VAE decode),
    as the pipeline runs them; returns each stage's peak resident weight bytes from the residency log."""
    log = pipe.placement.residency[str(pipe.placement.devices["dit"])]
    peaks = {}
    with torch.no_grad():
        log.restart_peak()
        with pipe.placement.visit("text_encoder") as device:
            te = pipe.text_encoder
            clip = te.bert(input_ids=torch.ones(ROWS, CLIP_LENGTH, dtype=torch.long, device=device))[0]
            t5 = te.mt5(input_ids=torch.ones(ROWS, T5_LENGTH, dtype=torch.long, device=device))[0]
        peaks["text_encoder"] = log.peak_bytes
        log.restart_peak()
        with pipe.placement.visit("dit") as device:
            dit = pipe.dit
            masks = [torch.ones(ROWS, n, dtype=torch.long, device=device) for n in (CLIP_LENGTH, T5_LENGTH)]
            context = dit.text_context(clip.to(device, dit.dtype), masks[0], t5.to(device, dit.dtype), masks[1])
            x = torch.zeros(ROWS, 4, SIZE // 8, SIZE // 8, dtype=dit.dtype, device=device)
            t = torch.full((ROWS,), 500.0, device=device)
            for _ in range(steps):
                out = dit(x, t, context=context)
                if on_step is not None:
                    on_step()
        peaks["dit"] = log.peak_bytes
        log.restart_peak()
        with pipe.placement.visit("vae") as device:
            z = out[:1, :4].to(device, pipe.vae.dtype)
            decode_latents(pipe.vae, z, tiled=decode_needs_tiles(pipe.vae, z))
        peaks["vae"] = log.peak_bytes
    return peaks


def place(pipe: HunyuanDiTPipeline, mode: str, device: torch.device) -> None:
    offload, _ = MODES[mode]
    pipe.set_placement(offload, dict.fromkeys(COMPONENTS, device), resident_blocks=2,
                       rest=device if device.type == "meta" else torch.device("cpu"))


def computed_peaks() -> dict[str, dict]:
    """Per mode: each stage's resident weights (counted from the moves) + its activation estimate, in GB."""
    meta = torch.device("meta")
    dtype = torch.float16
    cfg = DiTConfig()
    text_kv = cfg.depth * 2 * ROWS * (cfg.text_len + cfg.t5_len) * cfg.hidden_size * 2
    results = {}
    for mode, (_, storage) in MODES.items():
        pipe = full_size_pipeline(meta, dtype)
        if storage is not None:
            store_fp8(pipe.dit, storage, "dit")
            store_fp8(pipe.text_encoder.mt5, storage, "mt5")
        place(pipe, mode, meta)
        weights = run_image(pipe, steps=1)
        z = torch.zeros(1, 4, SIZE // 8, SIZE // 8, dtype=dtype, device=meta)
        activations = {"text_encoder": ROWS * (CLIP_LENGTH * 1024 + T5_LENGTH * 2048) * 2,
                       "dit": dit_activation_bytes(cfg, dtype, SIZE, SIZE, ROWS) + text_kv,
                       "vae": decode_bytes(pipe.vae, z)}
        stages = {k: round((weights[k] + activations[k]) / GB, 2) for k in weights}
        results[mode] = {"peak_gb": max(stages.values()), "stages_gb": stages,
                         "weights_gb": {k: round(v / GB, 2) for k, v in weights.items()},
                         "target_gb": TARGETS_GB.get(mode)}
        pipe.placement.close()
    return results


def tiny_offload_cost(steps: int = 8, repeats: int = 3) -> dict[str, float]:
    """CPU seconds per tiny-model image in each offload mode, relative to the default mode."""
    import hunyuan_core as hy
    from hunyuan_core.tiny import make_tiny

    path = make_tiny(tempfile.mkdtemp(prefix="gpu_check_tiny_"))
    pipe = hy.load_pipeline(path, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    best = {}
    for mode in ("default", "model", "blocks"):
        pipe.set_placement(MODES[mode][0], dict.fromkeys(COMPONENTS, torch.device("cpu")))
        times = []
        for _ in range(repeats + 1):
            t0 = time.process_time()
            pipe("a shiba inu", width=128, height=128, steps=steps, seed=0)
            times.append(time.process_time() - t0)
        best[mode] = min(times[1:])
    return {mode: round(best[mode] / best["default"], 3) for mode in best}


def sdpa_kernels(pipe: HunyuanDiTPipeline, device: torch.device) -> list[str]:
    """The attention kernels the profiler saw in one DiT block at 1024²."""
    from torch.profiler import ProfilerActivity, profile

    block = pipe.dit.blocks[0]
    x = torch.randn(ROWS, (SIZE // 16) ** 2, 1408, device=device, dtype=pipe.dit.dtype)
    rope = pipe.dit.rope(SIZE // 16, SIZE // 16, device)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        kv = block.attn2.context_kv(torch.randn(ROWS, 333, 1024, device=device, dtype=x.dtype))
        block(x, x[:, 0], kv, rope)
        sync(device)
    names = {e.key for e in prof.key_averages()}
    return sorted(n for n in names if any(s in n.lower() for s in ("scaled_dot_product", "flash", "fmha", "cudnn")))


def cuda_checks(steps: int, flops_per_step: float, deadline: float) -> dict:
    """Speed and measured peaks on the GPU; each part is skipped (and says so) once ``deadline`` has passed."""
    device = torch.device("cuda")
    out = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "modes": {}}
    peak_tflops = next((v for k, v in DENSE_TFLOPS.items() if k in out["gpu"]), None)
    for dtype_name, dtype, storage in (("fp16", torch.float16, None), ("bf16", torch.bfloat16, None),
                                       ("fp8_e4m3fn", torch.float16, torch.float8_e4m3fn)):
        pipe = full_size_pipeline(device, dtype)
        if storage is not None:
            store_fp8(pipe.dit, storage, "dit")
            store_fp8(pipe.text_encoder.mt5, storage, "mt5")
        for mode in ("default", "model", "blocks"):
            if time.monotonic() > deadline:
                out["modes"][f"{mode}/{dtype_name}"] = "skipped: time budget"
                continue
            place(pipe, mode, device)
            run_image(pipe, steps=1)  # warm-up
            torch.cuda.reset_peak_memory_stats(device)
            stamps = []
            sync(device)
            t0 = time.perf_counter()
            run_image(pipe, steps, on_step=lambda: (sync(device), stamps.append(time.perf_counter())))
            sync(device)
            total = time.perf_counter() - t0
            per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            image_50 = total + (50 - steps) * per_step
            out["modes"][f"{mode}/{dtype_name}"] = {
                "s_per_step": round(per_step, 4), "s_per_50_step_image": round(image_50, 2),
                "peak_gb": round(torch.cuda.max_memory_allocated(device) / GB, 2),
                "mfu": round(flops_per_step / per_step / (peak_tflops * 1e12), 3) if peak_tflops else None}
        if dtype_name == "fp16" and time.monotonic() < deadline:
            place(pipe, "default", device)
            out["sdpa_kernels"] = sdpa_kernels(pipe, device)
            out["fp16_vs_fp32"] = fp16_vs_fp32(pipe, device)
            out["compile_speedup"] = compile_speedup(pipe, device, deadline)
        pipe.placement.close()
        del pipe
        torch.cuda.empty_cache()
    return out


def _dit_step(dit: HunyuanDiT, device: torch.device, dtype: torch.dtype):
    g = torch.Generator(device).manual_seed(1)
    masks = [torch.ones(ROWS, n, dtype=torch.long, device=device) for n in (CLIP_LENGTH, T5_LENGTH)]
    with torch.no_grad():
        context = dit.text_context(torch.randn(ROWS, CLIP_LENGTH, 1024, generator=g, device=device).to(dtype), masks[0],
                                   torch.randn(ROWS, T5_LENGTH, 2048, generator=g, device=device).to(dtype), masks[1])
    x = torch.randn(ROWS, 4, SIZE // 8, SIZE // 8, generator=g, device=device).to(dtype)
    t = torch.full((ROWS,), 500.0, device=device)
    return lambda model=dit: model(x, t, context=context)


def fp16_vs_fp32(pipe: HunyuanDiTPipeline, device: torch.device) -> dict:
    """The same random DiT in fp16 and fp32: both finite, and their relative difference."""
    with torch.no_grad():
        half = _dit_step(pipe.dit, device, torch.float16)().float()
        pipe.dit.float()
        full = _dit_step(pipe.dit, device, torch.float32)()
        pipe.dit.half()
    return {"finite": bool(torch.isfinite(half).all() and torch.isfinite(full).all()),
            "relative_error": float((half - full).norm() / full.norm())}


def compile_speedup(pipe: HunyuanDiTPipeline, device: torch.device, deadline: float) -> float | str:
    """Eager seconds per DiT step / ``torch.compile`` seconds per step (fp16, default mode)."""
    step = _dit_step(pipe.dit, device, torch.float16)
    compiled = torch.compile(pipe.dit)

    def best(model) -> float:
        times = []
        with torch.no_grad():
            for _ in range(4):
                sync(device)
                t0 = time.perf_counter()
                step(model)
                sync(device)
                times.append(time.perf_counter() - t0)
        return min(times[1:])

    eager = best(pipe.dit)
    if time.monotonic() > deadline:
        return "skipped: time budget"
    return round(eager / best(compiled), 3)


def dit_flops_per_step() -> float:
    """Model FLOPs of one guided DiT step at 1024² (batch 2), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        dit = HunyuanDiT(DiTConfig()).half()
    masks = [torch.ones(ROWS, n, dtype=torch.long, device="meta") for n in (CLIP_LENGTH, T5_LENGTH)]
    with torch.no_grad():
        context = dit.text_context(torch.zeros(ROWS, CLIP_LENGTH, 1024, dtype=torch.float16, device="meta"), masks[0],
                                   torch.zeros(ROWS, T5_LENGTH, 2048, dtype=torch.float16, device="meta"), masks[1])
        x = torch.zeros(ROWS, 4, SIZE // 8, SIZE // 8, dtype=torch.float16, device="meta")
        with FlopCounterMode(display=False) as counter:
            dit(x, torch.full((ROWS,), 500.0, device="meta"), context=context)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out", help="folder for the JSON")
    parser.add_argument("--steps", type=int, default=4, help="timed DiT steps per mode (GPU)")
    parser.add_argument("--budget", type=float, default=270, help="seconds the GPU part may take")
    args = parser.parse_args()
    start = time.monotonic()
    report = {"size": SIZE, "rows": ROWS, "computed": computed_peaks()}
    flops = dit_flops_per_step()
    report["dit_tflop_per_step"] = round(flops / 1e12, 2)
    print(f"computed peaks at {SIZE}² fp16, CFG batch {ROWS} (weights counted from the moves + activation estimates):")
    for mode, r in report["computed"].items():
        target = f"target <= {r['target_gb']} GB" if r["target_gb"] else ""
        print(f"  {mode:11s} {r['peak_gb']:6.2f} GB  {target:18s} stages {r['stages_gb']}")
    print(f"DiT step: {report['dit_tflop_per_step']} TFLOP (CFG batch {ROWS})")
    if torch.cuda.is_available():
        report["cuda"] = cuda_checks(args.steps, flops, start + args.budget)
        for key, r in report["cuda"]["modes"].items():
            print(f"  {key:18s} {r}")
        for key in ("sdpa_kernels", "fp16_vs_fp32", "compile_speedup"):
            print(f"  {key}: {report['cuda'].get(key)}")
    else:
        report["cuda"] = "not available: measured peaks and speed need a CUDA GPU"
        report["tiny_cpu_time_vs_default"] = tiny_offload_cost()
        print(f"tiny model, CPU time per image vs default: {report['tiny_cpu_time_vs_default']}")
    path = save_new(args.out, "gpu_check", ".json", lambda p: Path(p).write_text(json.dumps(report, indent=1)))
    print(f"wrote {path} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
