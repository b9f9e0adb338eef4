"""LoRA apply / restore time and the memory the merge holds, for a full-size LoRA on the full-size DiT, on the CPU.

    python bench/bench_lora.py [--dtype fp16|bf16|fp32] [--rank 64] [--targets official|kohya] [--repeat 3]

The DiT is DiT-g/2 (40 blocks, width 1408) with random weights (std 0.02, as trained Linear weights) in the given
dtype; the LoRA is written in the official PEFT layout (``Wqkv``, ``out_proj``, ``q_proj``, ``kv_proj`` and the
pooler's ``q_proj``: the released jade/porcelain files) or, with ``--targets kohya``, on every Linear of the blocks.
Its up matrices are small (``--up-std``, default 0.01: a change about 10% of a weight at strength 1).

Printed: the LoRA's own size; apply and restore wall time (best of ``--repeat``, with the same LoRA re-applied at
another strength so each apply really re-merges); what the merge keeps for an exact undo (rounding fix-ups);
the process's resident-memory peak growth during one apply (``VmHWM`` reset through ``clear_refs``), which also
counts the transient fp32 work of one layer (glibc set to return every freed block over 128 kB); and that restore gave the original bits back. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hunyuan_core import apply_loras, load_lora  # noqa: E402
from hunyuan_core.adapters.merge import _STATE  # noqa: E402
from hunyuan_core.model.config import DiTConfig  # noqa: E402
from hunyuan_core.model.dit import HunyuanDiT  # noqa: E402
from hunyuan_core.settings.devices import DTYPES  # noqa: E402

from bench_upscaler import _rss_kb  # noqa: E402  (bench/ is on the path when a script runs)

OFFICIAL_TARGETS = ("Wqkv", "out_proj", "q_proj", "kv_proj")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def full_size_dit(dtype: torch.dtype) -> HunyuanDiT:
    """DiT-g/2 v1.2 with random weights, built on the meta device and filled once in ``dtype``."""
    with torch.device("meta"):
        dit = HunyuanDiT(DiTConfig())
    dit.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(0.02))
    return dit


def write_lora(dit: HunyuanDiT, folder: Path, rank: int, targets: str, up_std: float) -> int:
    """Write a PEFT folder (fp16, as released) for the chosen targets; returns its tensors' bytes."""
    gen = torch.Generator().manual_seed(1)
    sd = {}
    for name, m in dit.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        wanted = (name.rsplit(".", 1)[-1] in OFFICIAL_TARGETS if targets == "official" else name.startswith("blocks."))
        if wanted:
            sd[f"base_model.model.{name}.lora_A.weight"] = (torch.randn(rank, m.in_features, generator=gen)
                                                            / m.in_features ** 0.5).half()
            sd[f"base_model.model.{name}.lora_B.weight"] = (torch.randn(m.out_features, rank, generator=gen) * up_std).half()
    folder.mkdir()
    save_file(sd, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": rank,
                                                            "target_modules": list(OFFICIAL_TARGETS)}))
    return sum(t.numel() * t.element_size() for t in sd.values())


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "131072":
        # Every allocation over 128 kB gets its own mapping, returned on free: RSS follows live memory.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--targets", default="official", choices=["official", "kohya"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--up-std", type=float, default=0.01, help="std of the up (lora_B) matrices")
    args = parser.parse_args()

    dit = full_size_dit(DTYPES[args.dtype])
    changed = {n: p for n, p in dit.named_parameters()}
    with tempfile.TemporaryDirectory() as tmp:
        lora_bytes = write_lora(dit, Path(tmp) / "lora", args.rank, args.targets, args.up_std)
        lora = load_lora(Path(tmp) / "lora")
        lora_resident = sum(m.down.nbytes + m.up.nbytes for mods in lora.parts["dit"].values() for m in mods)
        names = {path for path in lora.parts["dit"]}
        touched = [p for n, p in changed.items() if n.endswith(".weight") and n[:-7].replace(".", "_") in names]
        touched_bytes = sum(p.numel() * p.element_size() for p in touched)
        largest_layer = max(p.numel() for p in touched) * 4  # its fp32 delta
        base = [p.detach().clone() for p in touched]
        applies, restores, peak_kb, kept = [], [], 0, 0
        for i in range(args.repeat):
            gc.collect()
            _reset_peak()
            before = _rss_kb("VmRSS")
            start = time.perf_counter()
            apply_loras(dit, [(lora, 0.7 + 0.1 * i)])
            applies.append(time.perf_counter() - start)
            peak_kb = max(peak_kb, _rss_kb("VmHWM") - before)
            state = dit.__dict__[_STATE]
            kept = sum(w.index.nbytes + w.values.nbytes for w in state.weights.values())
            fixups = sum(w.index.numel() for w in state.weights.values())
            start = time.perf_counter()
            apply_loras(dit, [])
            restores.append(time.perf_counter() - start)
        exact = all(torch.equal(p.view(torch.uint8), b.view(torch.uint8)) for p, b in zip(touched, base))

    mb = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    print(f"DiT-g/2 (40 x 1408) in {args.dtype}; LoRA rank {args.rank}, {args.targets} targets: "
          f"up std {args.up_std}; {len(lora.parts['dit'])} modules, {mb(lora_bytes)} in the file, {mb(lora_resident)} held by the LoRA")
    print(f"weights it changes: {len(touched)} tensors, {mb(touched_bytes)} (a copy of them would be the naive undo)")
    print(f"apply:   best {min(applies):.2f} s  (all: {', '.join(f'{t:.2f}' for t in applies)}; threads {torch.get_num_threads()})")
    print(f"restore: best {min(restores):.2f} s  (all: {', '.join(f'{t:.2f}' for t in restores)})")
    print(f"apply + restore: {min(applies) + min(restores):.2f} s")
    print(f"kept for exact undo: {mb(kept)} ({fixups:,} rounding fix-ups = "
          f"{fixups / sum(p.numel() for p in touched):.3%} of the changed values)")
    print(f"peak RSS growth during apply: {mb(peak_kb * 1024)}; target <= LoRA + one layer = "
          f"{mb(lora_resident + touched_bytes // len(touched))} (one fp32 layer delta: {mb(largest_layer)})")
    print(f"restore bit-exact: {exact}")


if __name__ == "__main__":
    main()
