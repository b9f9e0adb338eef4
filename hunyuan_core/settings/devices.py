"""Default device and precision, one rule for every entry point (pipeline, loaders, upscaler, rewriter, CLIs,
nodes outside ComfyUI), the one table of precision names; which devices exist and how much memory they have."""

from __future__ import annotations

import gc

import torch

from ..errors import InputError

# The precision names offered everywhere (CLI --dtype, node widgets); "auto" lets resolve_dtype choose for the device.
DTYPES: dict[str, torch.dtype | None] = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def available_devices() -> list[str]:
    """The devices this machine can compute on, e.g. ``["cpu", "cuda", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    for kind in ("cuda", "xpu"):
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            names += [kind, *(f"{kind}:{i}" for i in range(backend.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names += ["mps", "mps:0"]
    return names


def default_device() -> torch.device:
    """The first accelerator this machine has: CUDA (ROCm included), else Intel's XPU, else Apple's MPS, else
    the CPU."""
    for kind in ("cuda", "xpu"):
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            return torch.device(kind)
    mps = getattr(torch.backends, "mps", None)
    return torch.device("mps" if mps is not None and mps.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> :func:`default_device`; a CUDA/XPU/MPS device must exist here, else
    :class:`InputError` naming the ones that do (instead of a CUDA-initialisation traceback deep inside a
    loader). Other backends (DirectML's ``privateuseone`` in ComfyUI, ...) cannot be queried and pass."""
    if device is None:
        return default_device()
    available = available_devices()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        resolved = None
    checkable = resolved is not None and resolved.type in ("cuda", "xpu", "mps", "meta")
    if resolved is None or (checkable and str(resolved) not in available):
        raise InputError(
            f"device {str(device)!r} is not available on this machine; expected one of: {', '.join(available)}"
        )
    return resolved


def release_cached_memory(device: torch.device) -> None:
    """Give the memory the allocator caches on ``device`` back (after a model left it, an out-of-memory retry
    or an interrupted run), once Python has dropped what nothing refers to any more."""
    gc.collect()
    backend = getattr(torch, device.type, None) if device.type in ("cuda", "mps", "xpu") else None
    if backend is not None and backend.is_available():
        backend.empty_cache()


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can still get on ``device`` (what the caching allocator holds counts as free);
    None when the platform does not say."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
    return None


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, cpu_default: torch.dtype = torch.float32
) -> torch.dtype:
    """``None``/``"auto"`` -> fp16 on GPUs (the official precision), ``cpu_default`` on CPU (fp16 matmuls are
    slow there); names such as ``"bf16"`` map to their dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and (not isinstance(dtype, str) or dtype not in DTYPES):
        raise InputError(f"unknown dtype {dtype!r}: choose {', '.join(DTYPES)}")
    chosen = DTYPES[dtype or "auto"]
    if chosen is None:
        return torch.float16 if device.type in ("cuda", "mps", "xpu") else cpu_default
    return chosen
