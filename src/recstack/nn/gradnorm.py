"""Learned weights for the losses of several targets by gradient normalisation: GradNorm (Chen,
Badrinarayanan, Lee & Rabinovich, ICML 2018).

Each target k has a weight ``w_k`` (1 at the start). At every step, with ``g_k`` the norm of
``L_k``'s gradient on the model's last shared layer ``W``:

* ``G_k = w_k g_k``, ``Ḡ`` their mean; ``r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0))``, each
  target's inverse training rate (``L_k(0)``: its loss at the first step);
* the network trains on ``sum_k w_k L_k`` (the weights held fixed);
* the weights train on ``sum_k |G_k - Ḡ r_k^alpha|`` (the target ``Ḡ r_k^alpha`` held fixed): a
  target whose gradients are too small for how slowly it learns gains weight;
* after each step the weights are renormalised to sum to T (here: before the next step's loss,
  the same thing).

Both parts come out of one backward pass: the loss returned is ``sum_k w_k.detach() L_k + (L_grad
- L_grad.detach())``, whose value is the weighted loss and whose gradient is the network's and
the weights' at once. The norms ``g_k`` cost one partial backward per target, down to ``W`` only.
torch-rechub's ``adaptive_params={"method": "gradnorm"}`` (default alpha 0.16) does the same in
two passes; the paper's experiments use alpha 0.12-3 (1.5 for its NYUv2 set).

The weights and the first losses are model state (a multi-task ranker owns this module with
``loss_weighting: gradnorm``): trained, checkpointed, resumed and synced as any weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["GradNormWeights"]

_MIN_WEIGHT = 1e-3  # renormalisation keeps every weight positive


class GradNormWeights(nn.Module):
    """Per-target weights ``weights`` ``(T,)`` (1 at the start) and the first step's losses
    ``initial_losses`` ``(T,)`` (NaN until then).

    Args:
        targets: the target names, in the order the losses are given.
    """

    def __init__(self, targets: Sequence[str]) -> None:
        super().__init__()
        if not targets:
            raise ValueError("GradNormWeights needs at least one target")
        self.targets = tuple(targets)
        self.weights = nn.Parameter(torch.ones(len(self.targets)))
        self.register_buffer("initial_losses", torch.full((len(self.targets),), float("nan")))

    def combine(self, losses: Sequence[Tensor], shared: Sequence[Tensor], alpha: float) -> Tensor:
        """The training loss (module docstring): value ``sum_k w_k L_k``.

        Args:
            losses: one scalar loss per target, in ``targets`` order, with their graphs.
            shared: the last shared layer's parameters (``W``), whose gradient norms are balanced.
            alpha: the restoring force towards equal training rates.
        """
        count = len(self.targets)
        if len(losses) != count:
            raise ValueError(f"GradNormWeights weighs {count} targets {list(self.targets)}, got {len(losses)} losses")
        with torch.no_grad():  # renormalise after the previous step: positive, summing to T
            self.weights.clamp_(min=_MIN_WEIGHT).mul_(count / self.weights.sum())
        stacked = torch.stack([loss.to(self.weights.dtype) for loss in losses])  # (T,)
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(stacked.detach())
        norms = torch.stack([_gradient_norm(loss, shared) for loss in losses]).detach()  # (T,) g_k
        scaled = self.weights * norms  # (T,) G_k, differentiable in the weights only
        ratios = stacked.detach() / self.initial_losses.clamp_min(1e-12)
        target = scaled.detach().mean() * (ratios / ratios.mean()) ** alpha  # (T,) held fixed
        balance = (scaled - target).abs().sum()
        return (self.weights.detach() * stacked).sum() + (balance - balance.detach())

    def normalized(self) -> dict[str, float]:
        """The weights as the next step will use them (summing to T)."""
        with torch.no_grad():
            weights = self.weights.detach().clamp(min=_MIN_WEIGHT)
            weights = weights * (len(self.targets) / weights.sum())
        return {name: float(value) for name, value in zip(self.targets, weights.cpu())}


def _gradient_norm(loss: Tensor, shared: Sequence[Tensor]) -> Tensor:
    """``||d loss / d shared||_2`` over every tensor of ``shared`` (sparse gradients included)."""
    grads = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
    squares = [(g.coalesce().values() if g.is_sparse else g).float().pow(2).sum() for g in grads if g is not None]
    if not squares:
        raise ValueError("GradNorm: this target's loss does not reach the model's shared layer")
    return torch.stack(squares).sum().sqrt()
