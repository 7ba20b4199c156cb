"""Pointwise retrieval loss: binary cross-entropy on a scaled cosine (seed 001).

Shape legend: B batch, D vector dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.tasks.retrieval_steps import positive_item_rows, positive_item_vectors, retrieval_pairs, scaled_cosine

__all__ = ["PointwiseTask"]


@register_task("pointwise")
class PointwiseTask(RegisteredTask, SingleHeadTask):
    """Binary cross-entropy on ``gamma * cosine`` with labelled (user, item, 0/1) rows (seed 001).

    Args:
        gamma: the cosine's scale (10 in seed 001; the inverse of a temperature).
        pos_weight: weight of the positive term (seed 001: 1.2); None for 1.

    ``predict`` returns probabilities ``sigmoid(gamma * cosine)``, the scores a logloss/AUC
    evaluation expects; they rank exactly as the scaled cosine.
    """

    family: ClassVar[TaskType] = TaskType.RETRIEVAL

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: pointwise, gamma: 10, pos_weight: 1.2}``."""

        gamma: float = 10.0
        pos_weight: float | None = None

        def validate(self) -> None:
            require(self.gamma > 0, "gamma", f"must be > 0, got {self.gamma}")
            require(self.pos_weight is None or self.pos_weight > 0, "pos_weight", f"must be > 0, got {self.pos_weight}")

    @classmethod
    def from_params(cls, params: "PointwiseTask.Params") -> "PointwiseTask":
        return cls(gamma=params.gamma, pos_weight=params.pos_weight)

    def __init__(self, *, gamma: float = 10.0, pos_weight: float | None = None) -> None:
        self.params = self.Params(gamma=gamma, pos_weight=pos_weight)  # checked: ConfigError naming the parameter
        self.gamma = self.params.gamma
        self.pos_weight = self.params.pos_weight

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        return self._logits_and_labels(model, batch)[0]

    def _logits_and_labels(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """``(N,)`` gamma * cosine of the model's pairs (N = B for two towers) and their labels."""
        pairs = retrieval_pairs(model, batch)
        rows = None
        if pairs.positive_vectors is None:
            rows = positive_item_rows(pairs, batch, "item_id", pairs.queries.device, why="pointwise positives")
        items = positive_item_vectors(model, pairs, rows)  # (N, D)
        return scaled_cosine(pairs.queries.float(), items.float(), scale=self.gamma), pairs.labels  # (N,)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits, labels = self._logits_and_labels(model, batch)  # (N,), (N,)
        if labels is None:
            raise ValueError("PointwiseTask.loss needs batch.label")
        labels = labels.to(device=logits.device, dtype=logits.dtype)  # (N,)
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        return torch.sigmoid(self.logits(model, batch))  # probabilities (N,)

    def __repr__(self) -> str:
        return f"PointwiseTask(gamma={self.gamma}, pos_weight={self.pos_weight})"
