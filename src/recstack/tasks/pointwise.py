"""Pointwise retrieval loss: binary cross-entropy on a scaled cosine (seed 001).

Shape legend: B batch, D vector dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.tasks.retrieval_steps import scaled_cosine

__all__ = ["PointwiseTask"]


class PointwiseTask:
    """Binary cross-entropy on ``gamma * cosine`` with labelled (user, item, 0/1) rows (seed 001).

    Args:
        gamma: the cosine's scale (10 in seed 001; the inverse of a temperature).
        pos_weight: weight of the positive term (seed 001: 1.2); None for 1.

    ``predict`` returns probabilities ``sigmoid(gamma * cosine)``, the scores a logloss/AUC
    evaluation expects; they rank exactly as the scaled cosine.
    """

    def __init__(self, *, gamma: float = 10.0, pos_weight: float | None = None) -> None:
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.gamma = gamma
        self.pos_weight = pos_weight

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        user_vectors, item_vectors = model(batch)  # (B, D), (B, D)
        return scaled_cosine(user_vectors.float(), item_vectors.float(), scale=self.gamma)  # (B,)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if batch.label is None:
            raise ValueError("PointwiseTask.loss needs batch.label")
        logits = self.logits(model, batch)  # (B,)
        labels = batch.label.to(device=logits.device, dtype=logits.dtype)  # (B,)
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        return torch.sigmoid(self.logits(model, batch))  # probabilities (B,)

    def __repr__(self) -> str:
        return f"PointwiseTask(gamma={self.gamma}, pos_weight={self.pos_weight})"
