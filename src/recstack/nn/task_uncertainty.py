"""Learned weights for the losses of several targets: homoscedastic task uncertainty
(Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018).

Each target k has a learned log-variance ``s_k = log sigma_k^2`` (0 at the start: sigma = 1) and
the combined loss is

    sum_k  scale_k * exp(-s_k) * loss_k  +  s_k / 2

with ``scale_k`` 1 for a classification loss (the paper's eq. 10, ``loss / sigma^2 + log sigma``)
and 1/2 for a squared error (eq. 7, ``loss / (2 sigma^2) + log sigma``), times any fixed weight
the target declares. For a fixed ``loss_k`` the optimum is ``exp(-s_k) = 1 / (2 scale_k loss_k)``:
a target's effective weight ``scale_k exp(-s_k)`` settles at ``1 / (2 loss_k)``, so targets whose
loss stays high (noisy, hard) weigh less, with no weights to tune by hand.

torch-rechub's ``adaptive_params={"method": "uwl"}`` is the same idea written
``2 loss exp(-w) + w`` with ``w`` clamped at >= 0 (weights never above their start); this module
follows the paper, unclamped.

The log-variances are model parameters (a multi-task ranker owns this module when
``loss_weighting: uncertainty``), so the optimizer, checkpoints, resume and DDP treat them as any
weight; only the loss (``tasks/multi_task.py``) reads them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LossWeighting", "TaskUncertainty"]


class LossWeighting(str, enum.Enum):
    """How a multi-task loss weighs its targets."""

    FIXED = "fixed"  # each target's declared weight
    UNCERTAINTY = "uncertainty"  # learned from each target's uncertainty (this module)
    GRADNORM = "gradnorm"  # learned by balancing gradient norms (nn/gradnorm.py)
    METABALANCE = "metabalance"  # auxiliary gradients rescaled to the main target's (nn/metabalance.py)


class TaskUncertainty(nn.Module):
    """One learned log-variance per target, ``log_variance`` ``(T,)``, initialised at 0.

    Args:
        targets: the target names, in the order the losses are given.

    Example:
        >>> weigh = TaskUncertainty(["click", "like"])
        >>> round(weigh.combine([torch.tensor(0.7), torch.tensor(0.2)], scales=[1.0, 1.0]).item(), 4)
        0.9
    """

    def __init__(self, targets: Sequence[str]) -> None:
        super().__init__()
        if not targets:
            raise ValueError("TaskUncertainty needs at least one target")
        self.targets = tuple(targets)
        self.log_variance = nn.Parameter(torch.zeros(len(self.targets)))

    def combine(self, losses: Sequence[Tensor], scales: Sequence[float]) -> Tensor:
        """``sum_k scales[k] * exp(-s_k) * losses[k] + s_k / 2``: a scalar.

        Args:
            losses: one scalar loss per target, in ``targets`` order.
            scales: 1 for a classification loss, 0.5 for a squared error, times the target's
                fixed weight.
        """
        if len(losses) != len(self.targets) or len(scales) != len(self.targets):
            raise ValueError(f"TaskUncertainty weighs {len(self.targets)} targets {list(self.targets)}, got {len(losses)} losses and {len(scales)} scales")
        s = self.log_variance
        stacked = torch.stack([loss.to(s.dtype) for loss in losses])  # (T,)
        return (s.new_tensor(scales) * torch.exp(-s) * stacked + 0.5 * s).sum()

    def weights(self, scales: Sequence[float]) -> dict[str, float]:
        """Each target's current effective weight ``scales[k] * exp(-s_k)``."""
        with torch.no_grad():
            values = self.log_variance.new_tensor(scales) * torch.exp(-self.log_variance.detach())
        return {name: float(value) for name, value in zip(self.targets, values.cpu())}
