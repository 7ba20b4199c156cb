"""``trainer.compile``: the training forward through ``torch.compile``, where it can run.

Inductor fuses what eager PyTorch runs op by op (Dice's elementwise passes, bias +
activation, casts, the embedding glue). On this project's CPU, in steady state
(``benchmarks/ranking.py --speed 5 --compile``; docs/benchmarks.md): DIN +38% in fp32 and +54%
in bf16, DeepFM bf16 +13%, Wide&Deep and DCN within the noise. The price is a one-time
compilation, 4-50 s for a ranking model here, so it pays off for long runs of attention
models, not for a seconds-long epoch of a small MLP model.

Inductor needs a C++ compiler on CPU and Triton on CUDA; without one, training runs eagerly
with a warning rather than failing at the first step.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn

__all__ = ["compile_for_training"]

CPU_COMPILERS = ("g++", "clang++", "c++")


def compile_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` sharing its parameters, or ``model`` itself (with a warning)
    when this device's inductor backend has no compiler."""
    missing = _missing_toolchain(device)
    if missing is not None:
        warnings.warn(f"trainer.compile is set but {missing}: training runs eagerly", stacklevel=2)
        return model
    return torch.compile(model)


def _missing_toolchain(device: torch.device) -> str | None:
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    wanted = os.environ.get("CXX")
    if wanted and shutil.which(wanted):
        return None
    if any(shutil.which(name) for name in CPU_COMPILERS):
        return None
    return f"no C++ compiler ({', '.join(CPU_COMPILERS)}) is on PATH"
