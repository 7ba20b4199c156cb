"""What one ``Trainer.fit`` trains, checkpoints and restores, gathered in one object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from recstack.tasks.base import Task
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["LogWindow", "TrainingRun"]


@dataclass
class LogWindow:
    """Loss and throughput since the last step log."""

    loss_sum: Tensor | float = 0.0  # summed on the device; read once per log
    steps: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class TrainingRun:
    """The model, its optimizers and the loop's bookkeeping during one ``fit``."""

    model: nn.Module
    task: Task
    train_model: nn.Module  # what the training forward calls: model, or its compiled wrapper
    optimizers: list[Optimizer]  # as given to fit, or built by the Trainer: dense, then sparse
    schedulers: list[LambdaLR]  # one per optimizer, or none
    scaler: torch.amp.GradScaler  # disabled unless fp16 on CUDA
    state: TrainerState
    control: TrainerControl
    epoch_loss: Tensor  # () float64 on the device: summed without a sync per step
    best_weights: dict[str, Any] | None = None  # Trainer.snapshot_weights of the best epoch
    epoch_rng: dict[str, Any] | None = None  # RNG just before train_batches(epoch) was called
    resuming: bool = False  # the next epoch continues a checkpoint
    resume_rng: dict[str, Any] | None = None  # mid-epoch checkpoint: RNG after its last step
    clock: float = field(default_factory=time.perf_counter)  # last update of train_seconds
    window: LogWindow = field(default_factory=LogWindow)
