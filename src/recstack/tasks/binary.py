"""Binary classification (click / no click): weighted cross-entropy on a ranking model's logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask, model_regularization
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task

__all__ = ["BinaryClassificationTask"]


@register_task("binary")
class BinaryClassificationTask(RegisteredTask, SingleHeadTask):
    """Binary cross-entropy between ``model(batch)`` logits ``(B,)`` and ``batch.label`` ``(B,)``.

    Args:
        pos_weight: weight of the positive term, ``-[w·y·log σ(z) + (1-y)·log(1-σ(z))]``;
            above 1 counters rare positives (None: 1).

    A model that is :class:`~recstack.tasks.base.Regularized` (DIN's mini-batch-aware L2) has
    its penalty added to the loss.

    Example:
        >>> from recstack.data.batch import Batch
        >>> class Bias(nn.Module):
        ...     def forward(self, batch):
        ...         return torch.zeros(len(batch))  # logits (B,)
        >>> batch = Batch(dense={"x": torch.zeros(4, 2)}, label=torch.tensor([1.0, 0.0, 0.0, 1.0]))
        >>> round(BinaryClassificationTask(pos_weight=1.2).loss(Bias(), batch).item(), 4)
        0.7625
        >>> BinaryClassificationTask().predict(Bias(), batch)
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
    """

    family: ClassVar[TaskType] = TaskType.BINARY

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: binary, pos_weight: 1.2}``."""

        pos_weight: float | None = None

        def validate(self) -> None:
            require(self.pos_weight is None or self.pos_weight > 0, "pos_weight", f"must be > 0, got {self.pos_weight}")

    def __init__(self, *, pos_weight: float | None = None) -> None:
        self.params = self.Params(pos_weight=pos_weight)
        self.pos_weight = self.params.pos_weight

    @classmethod
    def from_params(cls, params: "BinaryClassificationTask.Params") -> "BinaryClassificationTask":
        return cls(pos_weight=params.pos_weight)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if batch.label is None:
            raise ValueError("BinaryClassificationTask.loss needs batch.label")
        logits = model(batch).float()  # (B,); fp32 even under autocast: log-sigmoid underflows
        labels = batch.label.to(logits.dtype)  # (B,)
        pos_weight = (
            None
            if self.pos_weight is None
            else torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        )
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
        regularized = model_regularization(model)
        if regularized is not None:
            loss = loss + regularized.regularization(batch)
        return loss

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch)  # (B,)
        return torch.sigmoid(logits.float())  # probabilities (B,)

    def __repr__(self) -> str:
        return f"BinaryClassificationTask(pos_weight={self.pos_weight})"
