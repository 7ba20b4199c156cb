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

Each step runs one backward per target (``autograd.grad`` of ``L_k`` over every trainable tensor
of the model, ``nn/gradient_surrogate.py``), which gives both the norms ``g_k`` on ``W`` and the
network's gradient ``sum_k w_k G_k``; the loss returned has the weighted loss as its value, and its
backward hands the network that gradient (without running the model's graph again) and the
weights theirs (through ``L_grad``).
torch-rechub's ``adaptive_params={"method": "gradnorm"}`` (default alpha 0.16) does the same in
two passes; the paper's experiments use alpha 0.12-3 (1.5 for its NYUv2 set).

The weights and the first losses are model state (a multi-task ranker owns this module with
``loss_weighting: gradnorm``): trained, checkpointed, resumed and synced as any weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recstack.nn.gradient_surrogate import gradient_norm, gradient_surrogate, per_target_gradients, sum_gradients

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

    def combine(self, losses: Sequence[Tensor], parameters: Sequence[Tensor] | None, shared: Sequence[Tensor], alpha: float) -> Tensor:
        """The training loss (module docstring): value ``sum_k w_k L_k``.

        Args:
            losses: one scalar loss per target, in ``targets`` order, with their graphs.
            parameters: the model's trainable tensors (this module's weights left out if given);
                None for a model whose tables train inside their own backward (TorchRec's fused
                kernels), which only a backward through the model's graph runs: the norms then
                cost one partial backward per target down to ``shared``, and the network trains
                on the backward of the returned loss through the graph.
            shared: the last shared layer's parameters (``W``, among ``parameters``), whose
                gradient norms are balanced.
            alpha: the restoring force towards equal training rates.
        """
        count = len(self.targets)
        if len(losses) != count:
            raise ValueError(f"GradNormWeights weighs {count} targets {list(self.targets)}, got {len(losses)} losses")
        if not any(loss.requires_grad for loss in losses):  # no gradients (a probe forward, an evaluation)
            with torch.no_grad():
                weights = self.weights.clamp(min=_MIN_WEIGHT)
                return (weights * (count / weights.sum()) * torch.stack([loss.to(weights.dtype) for loss in losses])).sum()
        with torch.no_grad():  # renormalise after the previous step: positive, summing to T
            self.weights.clamp_(min=_MIN_WEIGHT).mul_(count / self.weights.sum())
        stacked = torch.stack([loss.to(self.weights.dtype) for loss in losses])  # (T,)
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(stacked.detach())
        weights = self.weights.detach()
        if parameters is None:
            norms = torch.stack([_norm_on(g) for g in per_target_gradients(losses, shared)]).detach()  # (T,) g_k
            network = (weights * stacked).sum()  # the network's gradient: a backward through the graph
        else:
            parameters = [p for p in parameters if p is not self.weights]
            index = {id(p): i for i, p in enumerate(parameters)}
            missing = [i for i, p in enumerate(shared) if id(p) not in index]
            if missing:
                raise ValueError(f"GradNorm: shared tensors {missing} are not among the model's trainable parameters")
            grads = per_target_gradients(losses, parameters)  # T x P
            with torch.no_grad():
                norms = torch.stack([_norm_on([g[index[id(p)]] for p in shared]) for g in grads])  # (T,) g_k
                combined = [sum_gradients([g[i] for g in grads], weights) for i in range(len(parameters))]
            network = (weights * stacked.detach()).sum() + gradient_surrogate(parameters, combined)
        scaled = self.weights * norms  # (T,) G_k, differentiable in the weights only
        ratios = stacked.detach() / self.initial_losses.clamp_min(1e-12)
        target = scaled.detach().mean() * (ratios / ratios.mean()) ** alpha  # (T,) held fixed
        balance = (scaled - target).abs().sum()
        return network + (balance - balance.detach())

    def normalized(self) -> dict[str, float]:
        """The weights as the next step will use them (summing to T)."""
        with torch.no_grad():
            weights = self.weights.detach().clamp(min=_MIN_WEIGHT)
            weights = weights * (len(self.targets) / weights.sum())
        return {name: float(value) for name, value in zip(self.targets, weights.cpu())}


def _norm_on(grads: Sequence[Tensor | None]) -> Tensor:
    """``||(g_1, ..., g_n)||_2`` over the gradients a target gives ``W``'s tensors."""
    present = [gradient_norm(g) for g in grads if g is not None]
    if not present:
        raise ValueError("GradNorm: this target's loss does not reach the model's shared layer")
    return torch.linalg.vector_norm(torch.stack(present))
