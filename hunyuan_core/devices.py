"""Default device and precision, one rule for every loader."""

from __future__ import annotations

import torch

from .errors import InputError

DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "float32": torch.float32}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, cpu_default: torch.dtype = torch.float32
) -> torch.dtype:
    """``None``/``"auto"`` -> fp16 on GPUs (the official precision), ``cpu_default`` on CPU (fp16 matmuls are
    slow there); names such as ``"bf16"`` map to their dtype."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps", "xpu") else cpu_default
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype '{dtype}': choose auto, fp16, bf16 or fp32")
    return DTYPES[dtype]
