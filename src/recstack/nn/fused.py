"""When a hand-fused training node (``relu_mlp``, the DCN cross network, the FM interaction)
may replace a module's own ops: eager training on CPU. Evaluation keeps the modules' ops, ONNX
export (``torch.jit`` tracing) records them, and ``torch.compile`` fuses them itself. Also the
CPU autocast dtype those nodes (and DIN's packing) compute in."""

from __future__ import annotations

import torch

__all__ = ["cpu_autocast_dtype", "fused_training_applies"]


def fused_training_applies(x: torch.Tensor) -> bool:
    """Whether a step on input ``x`` may run through a fused autograd Function."""
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype CPU autocast runs matmuls in, or None when it is off."""
    if not hasattr(torch, "get_autocast_dtype"):  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
