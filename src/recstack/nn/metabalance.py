"""Auxiliary targets' gradients rescaled towards the main target's on shared parameters:
MetaBalance (He, Feng, Hsieh, Guo, Zhou & Wu, "MetaBalance: Improving Multi-Task Recommendations
via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022).

One target is the main one (the paper's target task), the others auxiliary. For every shared
parameter tensor ``θ`` (one that two or more targets' losses reach) and every target k, with
``G_k`` the gradient of ``w_k L_k`` on ``θ`` at this step:

* ``m_k <- β m_k + (1 - β) ||G_k||``: a moving average of the gradient's norm, per tensor and
  target (0 at the start);
* an auxiliary target's gradient moves towards the main one's magnitude, relaxed by ``r``:
  ``G_k <- r (m_main / m_k) G_k + (1 - r) G_k``;
* ``θ`` trains on the sum of the (rescaled) ``G_k``. Tensors one target alone reaches (its own
  tower) train on its gradient as before.

``r = 1`` gives every auxiliary gradient the main one's averaged magnitude, ``r = 0`` is the plain
sum. The paper's three strategies (``strategy``): ``both`` (the default, as the authors' code and
torch-rechub's ``MetaBalance``: larger auxiliary gradients shrink, smaller ones grow), ``shrink``
(only those larger than the main one's are rescaled) and ``enlarge`` (only the smaller ones). The
defaults ``r`` 0.7 and ``β`` 0.9 are torch-rechub's.

Which tensors are shared is read from the per-target gradients at each step (a target whose graph
does not reach a tensor gives it none, or zeros under ``torch.compile``): ESMM's CTR network counts (the CTCVR loss reaches it through
``pCTR x pCVR``), as do PLE's experts below its last level.

Each step costs one backward per target (``autograd.grad`` over every trainable tensor, where a
fixed-weight loss costs one backward in all); the loss returned is then
``sum_k w_k L_k`` in value plus ``c - c.detach()`` with ``c = sum_θ <θ, G_θ.detach()>``, ``G_θ``
the combined gradient: its backward hands each tensor ``G_θ`` without running the model's graph
again, so gradient clipping, DDP's averaging (its hooks fire on that backward) and every
optimizer see an ordinary gradient. The moving averages are model state (a buffer of this
module, which a multi-task ranker owns with ``loss_weighting: metabalance``): checkpointed and
resumed with the weights.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from recstack.nn.gradient_surrogate import gradient_norm, gradient_surrogate, per_target_gradients, sum_gradients

__all__ = ["MetaBalance", "MetaBalanceStrategy", "shared_parameter_indices"]

_EPS = 1e-12


class MetaBalanceStrategy(str, enum.Enum):
    """Which auxiliary gradients MetaBalance rescales (the paper's strategies C, A and B)."""

    BOTH = "both"  # every one, towards the main target's magnitude
    SHRINK = "shrink"  # those larger than the main target's
    ENLARGE = "enlarge"  # those smaller than the main target's


class MetaBalance(nn.Module):
    """The moving averages of each target's gradient norm on each parameter tensor of the model,
    ``norms`` ``(T, P)`` (P: the model's trainable tensors, sized at the first step and by
    ``load_state_dict``).

    Args:
        targets: the target names, in the order the losses are given.
    """

    def __init__(self, targets: Sequence[str]) -> None:
        super().__init__()
        if len(targets) < 2:
            raise ValueError(f"MetaBalance needs a main target and at least one auxiliary one, got {list(targets)}")
        self.targets = tuple(targets)
        self.register_buffer("norms", torch.zeros(len(self.targets), 0))

    def combine(
        self,
        losses: Sequence[Tensor],
        parameters: Sequence[Tensor],
        *,
        main: int,
        relax_factor: float,
        beta: float,
        strategy: MetaBalanceStrategy | str = MetaBalanceStrategy.BOTH,
    ) -> Tensor:
        """The training loss (module docstring): value ``sum_k losses[k]``, gradient the
        rescaled sum on every tensor of ``parameters``.

        Args:
            losses: each target's weighted loss ``w_k L_k``, in ``targets`` order, with its graph.
            parameters: the model's trainable tensors, always in the same order.
            main: the index of the main target.
            relax_factor: ``r`` in [0, 1].
            beta: the moving average's decay in [0, 1).
            strategy: which auxiliary gradients are rescaled.
        """
        count = len(self.targets)
        if len(losses) != count:
            raise ValueError(f"MetaBalance balances {count} targets {list(self.targets)}, got {len(losses)} losses")
        if not any(loss.requires_grad for loss in losses):  # no gradients (a probe forward, an evaluation)
            return torch.stack([loss.detach() for loss in losses]).sum()
        if self.norms.shape[1] != len(parameters):
            if self.norms.shape[1] != 0:
                raise ValueError(f"MetaBalance holds norms for {self.norms.shape[1]} parameter tensors, the model has {len(parameters)}")
            self.norms.resize_(count, len(parameters)).zero_()  # in place: DDP syncs this same buffer
        grads = per_target_gradients(losses, parameters)  # T x P, None where a target does not reach a tensor
        with torch.no_grad():
            current = _norms(grads).to(self.norms.device)  # (T, P)
            shared = _shared(current)
            scales: dict[int, Tensor] = {}  # shared tensor -> (T,) factors on its targets' gradients
            if shared:
                columns = torch.tensor(shared, device=self.norms.device)
                averaged = self.norms[:, columns].mul_(beta).add_(current[:, columns], alpha=1.0 - beta)  # (T, S)
                self.norms[:, columns] = averaged
                factors = _factors(averaged, main, relax_factor, strategy)  # (T, S), the main target's factor 1
                scales = {i: factors[:, column] for column, i in enumerate(shared)}
            combined = [sum_gradients([g[i] for g in grads], scales.get(i)) for i in range(len(parameters))]
        total = torch.stack([loss.detach() for loss in losses]).sum()
        return total + gradient_surrogate(parameters, combined)

    def gradient_scales(self, main: int, relax_factor: float, strategy: MetaBalanceStrategy | str = MetaBalanceStrategy.BOTH) -> dict[str, float]:
        """Each target's median factor on its gradient over the shared tensors it reaches, from
        the current averages (1 for the main target and before the first step)."""
        if self.norms.shape[1] == 0:
            return {name: 1.0 for name in self.targets}
        factors = _factors(self.norms, main, relax_factor, strategy)  # (T, P)
        reached = self.norms > 0  # the shared tensors each target reaches
        return {
            name: 1.0 if k == main or not reached[k].any() else float(factors[k][reached[k]].median())
            for k, name in enumerate(self.targets)
        }

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "norms")
        if saved is not None and saved.shape != self.norms.shape:  # sized at the saved run's first step
            self.norms.resize_(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def shared_parameter_indices(losses: Sequence[Tensor], parameters: Sequence[Tensor]) -> list[int]:
    """Indices into ``parameters`` of the tensors that two or more of ``losses`` reach."""
    with torch.no_grad():
        return _shared(_norms(per_target_gradients(losses, parameters)))


def _norms(grads: Sequence[Sequence[Tensor | None]]) -> Tensor:
    """``(T, P)`` gradient norms, 0 where a target gives a tensor no gradient."""
    zero = torch.zeros(())
    return torch.stack([torch.stack([zero if g is None else gradient_norm(g).cpu() for g in per_target]) for per_target in grads])


def _factors(norms: Tensor, main: int, relax_factor: float, strategy: MetaBalanceStrategy | str) -> Tensor:
    """``r m_main / m_k + 1 - r`` per target and tensor where ``strategy`` rescales, else 1;
    1 on the main target's row."""
    strategy = MetaBalanceStrategy(strategy)
    ratio = norms[main] / norms.clamp_min(_EPS)  # (T, S)
    factors = relax_factor * ratio + (1.0 - relax_factor)
    if strategy is MetaBalanceStrategy.SHRINK:
        factors = torch.where(ratio < 1.0, factors, torch.ones_like(factors))
    elif strategy is MetaBalanceStrategy.ENLARGE:
        factors = torch.where(ratio > 1.0, factors, torch.ones_like(factors))
    factors[main] = 1.0
    return factors


def _shared(norms: Tensor) -> list[int]:
    """The tensors two or more targets reach: a non-zero gradient from each (a gradient of zeros
    counts as none: a compiled model's backward returns zeros where eager autograd gives none)."""
    return ((norms > 0).sum(0) >= 2).nonzero().flatten().tolist()
