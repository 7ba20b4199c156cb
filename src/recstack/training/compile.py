"""``trainer.compile``: the training forward through ``torch.compile``, where it can run.

Inductor fuses what eager PyTorch runs op by op (Dice's elementwise passes, bias +
activation, casts, the embedding glue). On this project's CPU, in steady state
(``benchmarks/ranking.py --speed 5 --compile``; docs/benchmarks.md): DIN +38% in fp32 and +54%
in bf16, DeepFM bf16 +13%, Wide&Deep and DCN within the noise. The price is a one-time
compilation, 4-50 s for a ranking model here, so it pays off for long runs of attention
models, not for a seconds-long epoch of a small MLP model.

Inductor needs a working C++ toolchain on CPU (a compiler, OpenMP) and Triton on CUDA. A tiny
function is compiled first, once per process and device type: when that fails, training runs
eagerly with a warning rather than failing at the first step.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn

from recstack.models.retrieval_contract import is_retrieval_model

__all__ = ["compile_for_training"]

CPU_COMPILERS = ("g++", "clang++", "c++")


def compile_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` sharing its parameters, or ``model`` itself (with a warning)
    when this device's inductor backend has no compiler, or for a retrieval model.

    A retrieval model trains through ``retrieval_pairs`` (every position of a sequence, the
    positives' rows), which the wrapper hands to the eager module: compiling ``forward`` would
    only cost the compilation, so it runs eagerly, and says so."""
    if is_retrieval_model(model):
        warnings.warn(
            f"trainer.compile is set but {type(model).__name__} is a retrieval model, which trains through "
            "retrieval_pairs, not forward: training runs eagerly",
            stacklevel=2,
        )
        return model
    missing = _missing_toolchain(device)
    if missing is not None:
        warnings.warn(f"trainer.compile is set but {missing}: training runs eagerly", stacklevel=2)
        return model
    return torch.compile(model)


def _missing_toolchain(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here, or None when it can."""
    if device.type not in _probed:
        _probed[device.type] = _probe(device)
    return _probed[device.type]


_probed: dict[str, str | None] = {}


def _probe(device: torch.device) -> str | None:
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed"
    else:
        wanted = os.environ.get("CXX")
        if not (wanted and shutil.which(wanted)) and not any(shutil.which(name) for name in CPU_COMPILERS):
            return f"no C++ compiler ({', '.join(CPU_COMPILERS)}) is on PATH"
    try:
        torch.compile(_probe_function)(torch.ones(4, device=device))
    except Exception as error:  # noqa: BLE001 - any toolchain failure means: run eagerly
        return f"torch.compile failed on a probe function ({type(error).__name__}: {str(error)[:200]})"
    return None


def _probe_function(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * 2.0 + 1.0)
