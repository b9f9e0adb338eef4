"""Peak resident memory while loading a full-size (DiT-g/2, 1.5B) DiT, ours vs the official recipe.

Writes random fp16 weights once (safetensors + .pt, ~3 GB each) to a scratch folder, then loads each in a
fresh process and reports ru_maxrss against the file size:
  ours      hy.load_dit(file.safetensors, device="cpu", dtype=fp16)  (mmap + meta init + assign)
  official  build the module (fp32 init), .half(), torch.load(.pt), load_state_dict  (hydit/inference.py)

    python bench/bench_load_memory.py [--dir /tmp/hydit-bench]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import torch


def write_weights(folder: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    from hunyuan_core.model.config import DiTConfig
    from hunyuan_core.model.dit import HunyuanDiT

    st, pt = folder / "dit_g2_fp16.safetensors", folder / "pytorch_model_ema.pt"
    if st.exists() and pt.exists():
        return st, pt
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in HunyuanDiT(DiTConfig()).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(s, generator=g) * 0.02).half() for k, (s, _) in shapes.items()}
    save_file(sd, st)
    torch.save(sd, pt)
    return st, pt


def _child(mode: str, path: str) -> None:
    if mode == "ours":
        import hunyuan_core as hy

        dit = hy.load_dit(path, device="cpu", dtype=torch.float16)
    else:
        from hunyuan_core.model.config import DiTConfig
        from hunyuan_core.model.dit import HunyuanDiT

        dit = HunyuanDiT(DiTConfig()).half()
        dit.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    n = sum(p.numel() for p in dit.parameters())
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Touch every weight: memory-mapped pages become resident, as they will in the first forward pass.
    with torch.no_grad():
        sum(float(p.float().abs().sum()) for p in dit.parameters())
    print(n, loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure(mode: str, path: Path) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=True)
    n, loaded, touched = out.stdout.split()
    return int(n), int(loaded), int(touched)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path("/tmp/hydit-bench"))
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    st, pt = write_weights(args.dir)
    size = st.stat().st_size
    n, ours, ours_touched = measure("ours", st)
    _, official, official_touched = measure("official", pt)
    gb = 1024**3
    print(f"DiT-g/2: {n:,} parameters, fp16 file {size / gb:.2f} GiB")
    print("peak RSS        after load            after touching every weight")
    for name, a, b in (("ours", ours, ours_touched), ("official", official, official_touched)):
        print(f"{name:<10} {a / gb:6.2f} GiB = {a / size:.2f}x file   {b / gb:6.2f} GiB = {b / size:.2f}x file")
    print(f"ratio ours/official (touched): {ours_touched / official_touched:.2f}")


if __name__ == "__main__":
    main()
