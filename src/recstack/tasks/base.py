"""The Task contract: what a model is trained to minimise and what it outputs for evaluation.

The loss lives in a task, not in the model, so one model can be trained several ways and one
Trainer drives every model: ``loss = task.loss(model, batch)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from recstack.data.batch import Batch

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    """Turns a model and a batch into a training loss or evaluation scores."""

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The scalar to minimise on ``batch`` (a mean over its rows)."""
        ...

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """Scores to evaluate, ``(B,)``: probabilities for classification tasks."""
        ...
