"""Where the loop runs, and the autocast context for mixed precision."""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager

import torch

from recstack.training.config import MixedPrecision

__all__ = ["autocast", "effective_precision", "resolve_device"]


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
    """Mixed precision is only used on CUDA; elsewhere it is turned off with a warning."""
    if precision is not MixedPrecision.NO and device.type != "cuda":
        warnings.warn(
            f"mixed_precision={precision.value} is ignored on {device.type}: it needs CUDA",
            stacklevel=2,
        )
        return MixedPrecision.NO
    return precision


def autocast(precision: MixedPrecision, device: torch.device) -> ContextManager[object]:
    """The forward-pass context: ``torch.autocast`` for bf16/fp16, a no-op otherwise."""
    if precision is MixedPrecision.NO:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is MixedPrecision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
