"""Where the loop runs, and the autocast context for mixed precision."""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager

import torch

from recstack.training.config import MixedPrecision

__all__ = ["autocast", "cpu_has_native_bf16", "effective_precision", "resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; otherwise ``torch.device(spec)``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available")
    return device


def effective_precision(precision: MixedPrecision, device: torch.device) -> MixedPrecision:
    """The precision the loop really uses on ``device``.

    CUDA: as asked. CPU: bf16 where the CPU computes it natively (AVX512-BF16 or AMX, through
    oneDNN: about 2x faster matmuls here), since bf16 keeps fp32's exponent range and needs no
    loss scaling; fp16, or bf16 on a CPU without it, is turned off with a warning.
    """
    if precision is MixedPrecision.NO or device.type == "cuda":
        return precision
    if device.type == "cpu" and precision is MixedPrecision.BF16:
        if cpu_has_native_bf16():
            return precision
        reason = "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
    else:
        reason = f"it needs CUDA{' (or bf16 on a CPU with native bfloat16)' if device.type == 'cpu' else ''}"
    warnings.warn(f"mixed_precision={precision.value} is ignored on {device.type}: {reason}", stacklevel=2)
    return MixedPrecision.NO


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: MixedPrecision, device: torch.device) -> ContextManager[object]:
    """The forward-pass context: ``torch.autocast`` for bf16/fp16, a no-op otherwise."""
    if precision is MixedPrecision.NO:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is MixedPrecision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
