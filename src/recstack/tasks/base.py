"""The Task contract: what a model is trained to minimise and what it outputs for evaluation.

The loss lives in a task, not in the model, so one model can be trained several ways and one
Trainer drives every model: ``loss = task.loss(model, batch)``.

Shape legend: B batch.

A task names its outputs (its *heads*): a single-head task has one, :data:`SCORE_HEAD`, and
``predict`` returns it; a task with several objectives (click and like) has one head per target
and returns them all from ``predict_heads``. A model may add a penalty of its own to the loss by
implementing :class:`Regularized` (DIN's mini-batch-aware L2).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from recstack.data.batch import Batch

__all__ = ["SCORE_HEAD", "Regularized", "SingleHeadTask", "Task", "model_regularization"]

SCORE_HEAD = "score"  # the one head of a single-head task (the column `recstack predict` writes)


@runtime_checkable
class Task(Protocol):
    """Turns a model and a batch into a training loss or evaluation scores."""

    @property
    def heads(self) -> tuple[str, ...]:
        """The names of the task's outputs, in order; ``(SCORE_HEAD,)`` for a single-head task."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The scalar to minimise on ``batch`` (a mean over its rows)."""
        ...

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """Scores to evaluate, ``(B,)``: probabilities for classification tasks (single-head
        tasks; a multi-head task raises and is read through :meth:`predict_heads`)."""
        ...

    def predict_heads(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """``(B,)`` scores of every head, keyed by :attr:`heads`."""
        ...


@runtime_checkable
class Regularized(Protocol):
    """A model that carries its own penalty, added to its task's loss (DIN's mini-batch-aware L2)."""

    def regularization(self, batch: Batch) -> Tensor:
        """A scalar penalty for training on ``batch``."""
        ...


def model_regularization(model: nn.Module) -> Regularized | None:
    """The model (or, under DDP, the module it wraps) when it is :class:`Regularized`, else None."""
    from torch.nn.parallel import DistributedDataParallel

    inner = model.module if isinstance(model, DistributedDataParallel) else model
    return inner if isinstance(inner, Regularized) else None


class SingleHeadTask:
    """Mixin of the tasks with one output: ``heads == ("score",)`` and ``predict_heads`` wraps
    ``predict``; a subclass defines ``predict``."""

    heads: ClassVar[tuple[str, ...]] = (SCORE_HEAD,)

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def predict_heads(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        return {SCORE_HEAD: self.predict(model, batch)}
