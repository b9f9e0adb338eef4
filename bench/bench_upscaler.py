"""Upscaler throughput and peak memory on the CPU: ours tiled vs untiled, vs spandrel driven like ComfyUI.

    python bench/bench_upscaler.py [--large] [--repeat N] [--threads N]

For each model shape (random weights in the real architectures: RealESRGAN_x4plus, x4plus_anime_6B,
realesr-general-x4v3) it measures, each in a fresh process so that the peak is its own:

* ``ours untiled``  — ``Upscaler(image, tile=<whole image>)``
* ``ours tiled``    — ``Upscaler(image, tile, overlap)``
* ``comfy tiled``   — spandrel's model called tile by tile the way ComfyUI's ImageUpscaleWithModel
  drives it (``comfy.utils.tiled_scale``: origins every ``tile - overlap``, clamped to the edge, linear
  feather of ``overlap * scale`` on every tile edge, accumulated output and weight images);
  falls back to our own network when spandrel is not installed (then it measures only the driver)
* ``spandrel untiled`` — the descriptor on the whole image (only with spandrel)

Throughput is output megapixels per second of wall time and per second of the process's CPU time
(best of ``--repeat``; with one thread, CPU time stays fair when other jobs share the machine). Peak
memory is the growth of the process's resident set during the call (Linux ``VmHWM`` after resetting
it via ``clear_refs``, with glibc returning every freed block over 128 kB), so it includes the output. The tile is scaled down with the image (real use: 1024 px, tile 512) so
that the CPU run stays short; ratios are what carry over. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hunyuan_core.upscaler.rrdbnet import RRDBConfig, RRDBNet  # noqa: E402
from hunyuan_core.upscaler.srvgg import SRVGGConfig, SRVGGNetCompact  # noqa: E402

# name: (network, input side, tile, overlap); the image is twice the tile, as 1024 px vs 512, and the
# overlap is the same 1/16 of the tile as ComfyUI's 32 of 512.
CONFIGS = {
    "RealESRGAN_x4plus (RRDBNet 23 blocks)": (lambda: RRDBNet(RRDBConfig()), 64, 32, 2),
    "RealESRGAN_x4plus_anime_6B (RRDBNet 6 blocks)": (lambda: RRDBNet(RRDBConfig(num_blocks=6)), 128, 64, 4),
    "realesr-general-x4v3 (SRVGGNetCompact 32 convs)": (lambda: SRVGGNetCompact(SRVGGConfig(num_conv=32)), 256, 128, 8),
}
METHODS = ("ours untiled", "ours tiled", "comfy tiled", "spandrel untiled")


# ------------------------------------------------------------------------------------ worker side
def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def comfy_tiled_scale(fn, image: torch.Tensor, tile: int, overlap: int, scale: int) -> torch.Tensor:
    """ComfyUI's tiled_scale as ImageUpscaleWithModel uses it, for one image ``[1, C, H, W]``."""
    _, c, h, w = image.shape
    if h <= tile and w <= tile:
        return fn(image)
    out = torch.zeros(1, c, h * scale, w * scale)
    weight = torch.zeros_like(out)
    feather = round(overlap * scale)
    for y0 in range(0, h, tile - overlap):
        for x0 in range(0, w, tile - overlap):
            y, x = max(0, min(h - overlap, y0)), max(0, min(w - overlap, x0))
            th, tw = min(tile, h - y), min(tile, w - x)
            result = fn(image[:, :, y : y + th, x : x + tw]).float()
            mask = torch.ones_like(result)
            for t in range(feather):
                ramp = (t + 1) / feather
                mask[:, :, t, :] *= ramp
                mask[:, :, -1 - t, :] *= ramp
                mask[:, :, :, t] *= ramp
                mask[:, :, :, -1 - t] *= ramp
            out[:, :, y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += result * mask
            weight[:, :, y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += mask
    return out / weight


def worker(spec: dict) -> dict:
    """Run one measurement (the output goes to spec["output"]); returns best seconds, peak MB, output shape."""
    from hunyuan_core.upscaler import load_upscaler

    torch.set_num_threads(spec["threads"])
    method, tile, overlap = spec["method"], spec["tile"], spec["overlap"]
    image = torch.from_numpy(np.load(spec["input"]))  # [1, H, W, 3]
    if method.startswith("ours") or not spec["spandrel"]:
        up = load_upscaler(spec["weights"], device="cpu", dtype=torch.float32)
        net, scale = up.forward, up.scale
    else:
        import spandrel

        descriptor = spandrel.ModelLoader().load_from_file(spec["weights"]).eval()
        net, scale = (lambda a: descriptor(a.float())), descriptor.scale
    chw = image.permute(0, 3, 1, 2)
    calls = {
        "ours untiled": lambda: up(chw, tile=max(image.shape[1:3])),
        "ours tiled": lambda: up(chw, tile=tile, overlap=overlap),
        "comfy tiled": lambda: comfy_tiled_scale(net, chw, tile, overlap, scale).clamp(0, 1),
        "spandrel untiled": lambda: net(chw),
    }
    call = calls[method]
    with torch.inference_mode():
        net(chw[:, :, :16, :16])  # warm-up: oneDNN primitives, allocator
    libc = ctypes.CDLL("libc.so.6")
    wall, cpu, peak = float("inf"), float("inf"), 0
    for _ in range(spec["repeat"]):
        out = None
        gc.collect()
        libc.malloc_trim(0)  # freed memory back to the OS, so the peak below is this call's own
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kb("VmRSS")
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = call()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
        peak = max(peak, _rss_kb("VmHWM") - base)
    np.save(spec["output"], out.numpy())
    estimate = up.memory_estimate(tile) / 2**20 if method == "ours tiled" else None
    return {"seconds": wall, "cpu_seconds": cpu, "peak_mb": peak / 1024, "out_shape": list(out.shape),
            "estimate_mb": estimate}


# ------------------------------------------------------------------------------------ parent side
def _image(side: int) -> np.ndarray:
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    base = torch.stack([xx, yy, (xx * 9).sin() * 0.5 + 0.5], -1)
    return (base + 0.2 * torch.rand(side, side, 3, generator=g)).clamp(0, 1)[None].numpy()


def _weights(make, path: Path) -> None:
    """Real-architecture weights: PyTorch's default init, scaled so outputs are not all clamped."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in make().state_dict().items()}
    last = "conv_last.bias" if "conv_last.bias" in sd else max((k for k in sd if k.endswith(".bias")),
                                                                key=lambda k: int(k.split(".")[1]))
    sd[last] += 0.5
    save_file(sd, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="double-size images and tiles (about 4x slower)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the fastest counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: CPU time is then a fair measure on a busy machine)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    try:
        import spandrel  # noqa: F401
        have_spandrel = True
    except ImportError:
        have_spandrel = False
    print(f"torch {torch.__version__}, {args.threads} threads, best of {args.repeat}, spandrel "
          f"{'installed' if have_spandrel else 'absent: comfy tiled uses our network'}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (make, side, tile, overlap) in CONFIGS.items():
            if args.large:
                side, tile, overlap = side * 2, tile * 2, overlap * 2
            _weights(make, tmp / "w.safetensors")
            np.save(tmp / "in.npy", _image(side))
            print(f"\n{name}: {side}x{side} -> x4, tile {tile}, overlap {overlap}")
            results, outputs = {}, {}
            for method in METHODS:
                if method == "spandrel untiled" and not have_spandrel:
                    continue
                spec = {"method": method, "tile": tile, "overlap": overlap, "repeat": args.repeat, "threads": args.threads,
                        "spandrel": have_spandrel, "weights": str(tmp / "w.safetensors"),
                        "input": str(tmp / "in.npy"), "output": str(tmp / f"{len(results)}.npy")}
                # Every allocation over 128 kB gets its own mapping, returned on free: RSS follows live memory.
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
                run = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                     capture_output=True, text=True, check=True, env=env)
                results[method] = json.loads(run.stdout.strip().splitlines()[-1])
                outputs[method] = np.load(spec["output"])
                r = results[method]
                mp = np.prod(r["out_shape"][1:3]) / 1e6
                diff = np.abs(outputs[method] - outputs["ours untiled"])
                estimate = f"  (Upscaler.memory_estimate: {r['estimate_mb']:.0f} MB)" if r["estimate_mb"] else ""
                print(f"  {method:17s} {mp / r['seconds']:7.3f} MP/s ({mp / r['cpu_seconds']:7.3f} per CPU-s) "
                      f"peak {r['peak_mb']:7.1f} MB  |vs ours untiled| max {diff.max():.1e} "
                      f"mean {diff.mean():.1e}{estimate}")
            ours, comfy, whole = results["ours tiled"], results["comfy tiled"], results["ours untiled"]
            print(f"  ratios (CPU time): ours tiled vs comfy tiled: speed {comfy['cpu_seconds'] / ours['cpu_seconds']:.2f}x, "
                  f"peak memory {ours['peak_mb'] / comfy['peak_mb']:.2f}x;  ours tiled vs ours untiled: speed "
                  f"{whole['cpu_seconds'] / ours['cpu_seconds']:.2f}x, peak memory {ours['peak_mb'] / whole['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
