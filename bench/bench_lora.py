"""LoRA apply / restore time and the memory the merge holds, for a full-size LoRA on the full-size DiT, on the CPU.

    python bench/bench_lora.py [--dtype fp16|bf16|fp32] [--rank 64] [--targets official|kohya] [--repeat 3]

The DiT is DiT-g/2 (40 blocks, width 1408) with random weights (std 0.02, as trained Linear weights) in the given
dtype, written to a ``.safetensors`` file in a temporary folder and loaded from there with ``hy.load_dit``, as a
user's DiT is (restore reads the changed weights back from that file). The LoRA is written in the official PEFT
layout (``Wqkv``, ``out_proj``, ``q_proj``, ``kv_proj`` and the pooler's ``q_proj``: the released jade/porcelain
files) or, with ``--targets kohya``, on every Linear of the blocks. Its up matrices are small (``--up-std``,
default 0.01: a change about 10% of a weight at strength 1).

Printed: the LoRA's own size; the first apply after loading (which also compares each changed weight with the
file once); then apply and restore wall and CPU time (best of ``--repeat``, the same LoRA re-applied at another
strength so each apply really re-merges); what the merge keeps for the undo; the process's resident-memory peak
growth during an apply (``VmHWM`` reset through ``clear_refs``: the transient fp32 work and what the allocator
keeps for reuse, an upper bound) and its anonymous-memory growth over a restore (the file's pages it reads are
page cache, not held); and that restore gave the original bits back. The same run with the DiT built in memory
(no file: the subtract-and-fix-up undo) is printed with ``--no-file``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_upscaler import _rss_kb  # noqa: E402  (bench/ is on the path when a script runs)

from hunyuan_core import apply_loras, load_dit, load_lora  # noqa: E402
from hunyuan_core.adapters.merge import _STATE  # noqa: E402
from hunyuan_core.model.config import DiTConfig  # noqa: E402
from hunyuan_core.model.dit import HunyuanDiT  # noqa: E402
from hunyuan_core.settings.devices import DTYPES  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--targets", default="official", choices=["official", "kohya"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--up-std", type=float, default=0.01, help="std of the up (lora_B) matrices")
    parser.add_argument("--no-file", action="store_true", help="keep the DiT built in memory (no file to read back)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dit = full_size_dit(DTYPES[args.dtype])
        if not args.no_file:
            save_file(dit.state_dict(), Path(tmp) / "dit.safetensors")
            del dit
            gc.collect()
            dit = load_dit(Path(tmp) / "dit.safetensors", device="cpu", dtype=args.dtype)
        lora_bytes = write_lora(dit, Path(tmp) / "lora", args.rank, args.targets, args.up_std)
        lora = load_lora(Path(tmp) / "lora")
        lora_resident = sum(m.down.nbytes + m.up.nbytes for mods in lora.parts["dit"].values() for m in mods)
        names = {path for path in lora.parts["dit"]}
        touched = [p for n, p in dit.named_parameters() if n.endswith(".weight") and n[:-7].replace(".", "_") in names]
        touched_bytes = sum(p.numel() * p.element_size() for p in touched)
        base = [p.detach().clone() for p in touched]
        start = time.perf_counter()
        apply_loras(dit, [(lora, 0.6)])
        first = time.perf_counter() - start
        apply_loras(dit, [])
        applies, restores, apply_cpu, restore_cpu, peak_kb, anon_kb, kept = [], [], [], [], 0, 0, 0
        for i in range(args.repeat):
            gc.collect()
            _reset_peak()
            before = _rss_kb("VmRSS")
            start, cpu = time.perf_counter(), time.process_time()
            apply_loras(dit, [(lora, 0.7 + 0.1 * i)])
            applies.append(time.perf_counter() - start)
            apply_cpu.append(time.process_time() - cpu)
            peak_kb = max(peak_kb, _rss_kb("VmHWM") - before)
            held = dit.__dict__[_STATE].weights.values()
            kept = sum(w.index.nbytes + w.values.nbytes for w in held if w.index is not None)
            anon = _rss_kb("RssAnon")
            start, cpu = time.perf_counter(), time.process_time()
            apply_loras(dit, [])
            restores.append(time.perf_counter() - start)
            restore_cpu.append(time.process_time() - cpu)
            anon_kb = max(anon_kb, _rss_kb("RssAnon") - anon)
        exact = all(torch.equal(p.view(torch.uint8), b.view(torch.uint8)) for p, b in zip(touched, base))

    mb = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    undo = "subtract + rounding fix-ups (no file)" if args.no_file else "read back from the model file"
    print(f"DiT-g/2 (40 x 1408) in {args.dtype}; LoRA rank {args.rank}, {args.targets} targets: "
          f"up std {args.up_std}; {len(lora.parts['dit'])} modules, {mb(lora_bytes)} in the file, {mb(lora_resident)} held by the LoRA")
    print(f"weights it changes: {len(touched)} tensors, {mb(touched_bytes)} (a copy of them would be the naive undo); "
          f"undo: {undo}")
    print(f"first apply after loading: {first:.2f} s (compares each changed weight with the file once)")
    print(f"apply:   best {min(applies):.2f} s  (all: {', '.join(f'{t:.2f}' for t in applies)}; threads {torch.get_num_threads()})")
    print(f"restore: best {min(restores):.2f} s  (all: {', '.join(f'{t:.2f}' for t in restores)})")
    print(f"apply + restore: {min(applies) + min(restores):.2f} s wall, {min(apply_cpu) + min(restore_cpu):.2f} s CPU "
          "(other jobs on the machine inflate the wall time); target < 2 s")
    print(f"kept for the undo: {mb(kept)}")
    print(f"peak RSS growth during apply: {mb(peak_kb * 1024)}; anonymous memory growth over a restore: {mb(anon_kb * 1024)}; "
          f"target <= LoRA + one layer = {mb(lora_resident + touched_bytes // len(touched))}")
    print(f"restore bit-exact: {exact}")


if __name__ == "__main__":
    main()
