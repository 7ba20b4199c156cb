"""The trainer's settings: one frozen dataclass, validated once, at the edge.

Example:
    >>> cfg = TrainerConfig.from_dict({"epochs": 3, "optimizer": "adamw", "lr": 3e-3})
    >>> cfg.optimizer
    <OptimizerName.ADAMW: 'adamw'>
    >>> TrainerConfig.from_dict({"epoch": 3})
    Traceback (most recent call last):
    ...
    recstack.errors.ConfigError: epoch: unknown trainer setting (did you mean 'epochs'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

# ConfigError lives in recstack.errors (shared by every config section); re-exported here so
# `from recstack.training.config import ConfigError` keeps working wherever it ends up.
from recstack.errors import ConfigError
from recstack.typed_fields import coerce_fields

__all__ = [
    "ConfigError",
    "MixedPrecision",
    "MonitorMode",
    "OptimizerName",
    "SchedulerName",
    "TrainerConfig",
]


class OptimizerName(str, enum.Enum):
    ADAM = "adam"
    ADAMW = "adamw"
    ADAGRAD = "adagrad"
    SGD = "sgd"


class SchedulerName(str, enum.Enum):
    NONE = "none"
    COSINE = "cosine"  # linear warm-up for warmup_steps, then cosine decay to 0 at the last step
    STEP = "step"  # multiply the lr by gamma every step_size optimizer steps
    LINEAR_WARMUP = "linear_warmup"  # linear warm-up for warmup_steps, then constant


class MixedPrecision(str, enum.Enum):
    NO = "no"
    BF16 = "bf16"  # autocast to bfloat16; same exponent range as fp32, so no loss scaling
    FP16 = "fp16"  # autocast to float16 with a GradScaler against gradient underflow


class MonitorMode(str, enum.Enum):
    MAX = "max"
    MIN = "min"

    def improved(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta`` (any number beats None)."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        if self is MonitorMode.MAX:
            return value > best + min_delta
        return value < best - min_delta


@dataclass(frozen=True)
class TrainerConfig:
    """How to train; strings for the Enum fields are accepted and converted.

    Every value is checked in ``__post_init__``; a bad one raises :class:`ConfigError` whose
    message starts with the key.
    """

    epochs: int = 10
    optimizer: OptimizerName = OptimizerName.ADAM
    lr: float = 1e-3
    # Adam: L2 added to the gradient; AdamW: decoupled decay. Never applied to the sparse
    # embedding optimizer (SparseAdam has no weight decay; sparse Adagrad rejects it).
    weight_decay: float = 0.0
    # Large id tables built with nn.Embedding(sparse=True) get sparse gradients (only the rows a
    # batch touched); those parameters go to SparseAdam (or sparse Adagrad when optimizer is
    # adagrad) in a second optimizer, everything else to `optimizer`.
    sparse_embeddings: bool = False
    scheduler: SchedulerName = SchedulerName.NONE
    warmup_steps: int = 0  # optimizer steps of linear warm-up (cosine, linear_warmup)
    step_size: int = 1000  # optimizer steps between lr decays (step)
    gamma: float = 0.1  # lr multiplier at each decay (step)
    grad_clip_norm: float | None = None  # clip the global L2 norm of all gradients
    seed: int = 0  # python, numpy and torch RNGs are seeded at the start of fit
    device: str = "auto"  # "auto" picks cuda when available, else cpu; or "cpu", "cuda:1" ...
    # Autocast on CUDA; on CPU only bf16, and only where the CPU has native bfloat16
    # (otherwise ignored with a warning: emulated bf16 is slower than fp32).
    mixed_precision: MixedPrecision = MixedPrecision.NO
    # On CPU under glibc, keep freed activations in the heap instead of returning them to the
    # OS every step (training/allocator.py): DIN trains ~20% faster; RSS stays at its peak.
    keep_freed_memory: bool = True
    # Full garbage collections skip the objects alive when the loop starts (gc.freeze, undone at
    # the end of fit; training/gc_freeze.py): each one walked all ~340k of them, ~170 ms.
    freeze_set_up_objects: bool = True
    # torch.compile the training forward (training/compile.py): DIN +38-54% per step here after
    # a one-time compilation (4-50 s); eager, with a warning, without a compiler.
    compile: bool = False
    monitor: str = "auc"  # metric from evaluate() that picks the best weights
    monitor_mode: MonitorMode = MonitorMode.MAX
    min_delta: float = 0.0  # smallest change of `monitor` that counts as an improvement
    patience: int | None = None  # stop after this many evaluations without improvement
    checkpoint_every_steps: int | None = None  # None: checkpoint at epoch ends only
    log_every_steps: int = 50  # average the loss and measure samples/s over this many steps
    progress: bool = True  # tqdm bar (off by itself when stderr is not a terminal)

    def __post_init__(self) -> None:
        coerce_fields(self)  # strings -> Enums, ints -> floats; FieldError names the key
        self._check_ranges()

    def _check_ranges(self) -> None:
        _require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(self.step_size >= 1, "step_size", f"must be >= 1, got {self.step_size}")
        _require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        _require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            "grad_clip_norm",
            f"must be > 0 or None, got {self.grad_clip_norm}",
        )
        _require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _require(self.monitor != "", "monitor", "must name a metric")
        _require(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")
        _require(
            self.patience is None or self.patience >= 1,
            "patience",
            f"must be >= 1 or None, got {self.patience}",
        )
        _require(
            self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
            "checkpoint_every_steps",
            f"must be >= 1 or None, got {self.checkpoint_every_steps}",
        )
        _require(
            self.log_every_steps >= 1,
            "log_every_steps",
            f"must be >= 1, got {self.log_every_steps}",
        )
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(
                    f"device: expected 'auto' or a torch device such as 'cpu' or 'cuda:0', "
                    f"got {self.device!r}"
                ) from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainerConfig":
        """Build from parsed YAML/JSON; unknown keys and bad values raise ConfigError."""
        known = [spec.name for spec in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
                raise ConfigError(f"{key}: unknown trainer setting{hint}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (Enums as strings), the inverse of :meth:`from_dict`."""
        return {
            spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)
        }


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")
