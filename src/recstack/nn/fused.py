"""The one gate and the one switch of recstack's fast paths, and the CPU autocast dtype they use.

A fast path computes exactly what a module's own ops compute (the same values, the same
gradients, up to float rounding), only faster. There are two kinds, and one gate,
:func:`fast_path_applies`, for both:

- **hand-fused CPU nodes**: autograd Functions written for eager CPU training: the ReLU MLP
  (``relu_mlp``), the DCN cross network, the FM interaction and the embedding tables'
  ``index_add`` backward (``table.py``). They run when gradients are on, on CPU, and neither
  ``torch.jit`` tracing (ONNX export records the modules' ops) nor ``torch.compile`` (inductor
  fuses the ops itself) is looking;
- **layouts** (``any_device=True``): ordinary ops arranged differently, such as DIN's packed
  history (only real positions looked up, scored and pooled). They run whenever gradients
  are on and no tracing is going on, on any device and under ``torch.compile``.

Evaluation (``torch.no_grad()``) and export always take the modules' own ops.

The switch turns every fast path off at once, to check them or to rule them out::

    RECSTACK_FUSED=0 recstack train ...          # for a whole process
    with fused_paths(False):                      # for a block of code
        loss = task.loss(model, batch)

Example:
    >>> x = torch.ones(2, 3)
    >>> fast_path_applies(x)
    True
    >>> with fused_paths(False):
    ...     fast_path_applies(x)
    False
    >>> with torch.no_grad():
    ...     fast_path_applies(x)
    False
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["FUSED_ENV", "cpu_autocast_dtype", "fast_path_applies", "fused_paths", "fused_paths_enabled"]

FUSED_ENV = "RECSTACK_FUSED"  # "0" (or false/off/no) turns every fast path off for the process

_enabled = os.environ.get(FUSED_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def fast_path_applies(x: torch.Tensor, *, any_device: bool = False) -> bool:
    """Whether a step on input ``x`` may take a fast path now.

    Args:
        x: the path's input (its device decides for the CPU nodes).
        any_device: the path is a layout of ordinary ops (CUDA and ``torch.compile`` run it
            too), not a hand-written CPU autograd node.
    """
    if not (_enabled and torch.is_grad_enabled()) or torch.jit.is_tracing():
        return False
    return any_device or (x.device.type == "cpu" and not torch.compiler.is_compiling())


def fused_paths_enabled() -> bool:
    """Whether fast paths are switched on (``RECSTACK_FUSED`` and :func:`fused_paths`)."""
    return _enabled


@contextlib.contextmanager
def fused_paths(enabled: bool) -> Iterator[None]:
    """Switch every fast path on or off inside a ``with`` block (process-wide, not per
    thread); the previous setting comes back on exit."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype CPU autocast runs matmuls in, or None when it is off."""
    if not hasattr(torch, "get_autocast_dtype"):  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
