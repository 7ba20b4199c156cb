"""Per-target gradients, and a loss whose backward hands each parameter a given gradient.

Loss weightings that look at each target's gradient (GradNorm, MetaBalance) take one
``autograd.grad`` per target over the model's trainable tensors, combine them, and return
:func:`gradient_surrogate` of the result: a scalar of value 0 whose gradient on each tensor is
the combined one. Its backward does not run the model's graph again (one backward per target in
all, not one more), and to the trainer it is an ordinary loss: gradient clipping, DDP's
averaging (its hooks fire on that backward), sparse optimizers and AMP scaling apply unchanged.

Example:
    >>> w = torch.ones(3, requires_grad=True)
    >>> gradient_surrogate([w], [torch.tensor([1.0, 2.0, 3.0])]).backward()
    >>> w.grad
    tensor([1., 2., 3.])
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gradient_norm", "gradient_surrogate", "per_target_gradients", "sum_gradients"]


def per_target_gradients(losses: Sequence[Tensor], parameters: Sequence[Tensor]) -> list[tuple[Tensor | None, ...]]:
    """``[d loss_k / d parameters]`` per loss, None where a loss's graph does not reach a tensor;
    the graphs are kept for the caller's other uses."""
    return [torch.autograd.grad(loss, list(parameters), retain_graph=True, allow_unused=True) for loss in losses]


def gradient_norm(grad: Tensor) -> Tensor:
    """``||grad||_2`` in float32, a sparse gradient's over its (coalesced) values."""
    return torch.linalg.vector_norm((grad.coalesce().values() if grad.is_sparse else grad).float())


def sum_gradients(grads: Sequence[Tensor | None], scales: Tensor | None = None) -> Tensor | None:
    """``sum_k scales[k] * grads[k]`` (``scales`` None: 1) over the gradients given (sparse ones
    too, scaled by 0-d tensors: no host sync), None when every one is None."""
    terms = [g if scales is None else scales[k].to(g.device, g.dtype) * g for k, g in enumerate(grads) if g is not None]
    return functools.reduce(operator.add, terms) if terms else None


def gradient_surrogate(parameters: Sequence[Tensor], grads: Sequence[Tensor | None]) -> Tensor:
    """A scalar of value 0 whose gradient on ``parameters[i]`` is ``grads[i]`` (none where None).

    A sparse gradient (an embedding table's with ``sparse=True``) stays sparse: its rows are
    looked up with a sparse-gradient embedding, so sparse optimizers still get sparse updates.
    """
    terms = []
    for parameter, grad in zip(parameters, grads):
        if grad is None:
            continue
        grad = grad.detach().to(parameter.dtype)
        if grad.is_sparse:
            grad = grad.coalesce()
            rows = F.embedding(grad.indices()[0], parameter, sparse=True)  # (n, D)
            terms.append((rows * grad.values()).sum())
        else:
            terms.append((parameter * grad).sum())
    if not terms:
        return torch.zeros((), device=parameters[0].device if parameters else None)
    surrogate = torch.stack(terms).sum()
    return surrogate - surrogate.detach()
