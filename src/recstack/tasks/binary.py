"""Binary classification (click / no click): weighted cross-entropy on a ranking model's logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch

__all__ = ["BinaryClassificationTask"]


class BinaryClassificationTask:
    """Binary cross-entropy between ``model(batch)`` logits ``(B,)`` and ``batch.label`` ``(B,)``.

    Args:
        pos_weight: weight of the positive term, ``-[w·y·log σ(z) + (1-y)·log(1-σ(z))]``;
            above 1 counters rare positives (None: 1).

    A model with a ``regularization(batch) -> scalar`` method (DIN's mini-batch-aware L2) has
    it added to the loss.

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

    def __init__(self, *, pos_weight: float | None = None) -> None:
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = pos_weight

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
        # A model may carry its own penalty (DIN's mini-batch-aware L2); DDP wraps it in .module.
        regularization = getattr(getattr(model, "module", model), "regularization", None)
        if callable(regularization):
            loss = loss + regularization(batch)
        return loss

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch)  # (B,)
        return torch.sigmoid(logits.float())  # probabilities (B,)

    def __repr__(self) -> str:
        return f"BinaryClassificationTask(pos_weight={self.pos_weight})"
