"""An ``nn.Embedding`` whose dense CPU backward is one ``index_add_``.

torch's CPU ``embedding_dense_backward`` (2.13) costs ~80 us for a 1,024-id batch whatever the
table size, and ~2.7 ms for a 1,024 x 50 history (``benchmarks/embedding_backward.py``);
``zeros(table).index_add_(0, ids, grad)`` computes the same gradient in ~20 us and ~0.9 ms.
A ranking step looks up 10-20 tables, so that is ~10% of a DeepFM step and more of DIN's.

Everything else is ``nn.Embedding``'s: the same parameters and state_dict, ``sparse=True``
(sparse gradients), ``max_norm`` and ``scale_grad_by_freq`` take torch's own path, and so do
CUDA tensors (``index_add_`` there uses atomics: not deterministic), evaluation and export
(``torch.no_grad()`` or a frozen table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["Embedding"]


class Embedding(nn.Embedding):
    """``nn.Embedding`` with the faster dense backward on CPU; same arguments, same output."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Embedding's name
        weight = self.weight
        if (
            self.sparse
            or self.max_norm is not None
            or self.scale_grad_by_freq
            or weight.device.type != "cpu"
            or not (weight.requires_grad and torch.is_grad_enabled())
        ):
            return super().forward(input)
        return _IndexAddEmbedding.apply(weight, input, self.padding_idx)


class _IndexAddEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor, padding_idx: int | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.num_rows = weight.shape[0]
        ctx.padding_idx = padding_idx
        return F.embedding(ids, weight)  # (*ids.shape, D)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        width = grad.shape[-1]
        grad_weight = grad.new_zeros(ctx.num_rows, width)  # (V, D)
        # contiguous: index_add_ from a strided source (a slice of a cat's gradient) is ~4x slower
        grad_weight.index_add_(0, ids.reshape(-1), grad.reshape(-1, width).contiguous())
        if ctx.padding_idx is not None:
            grad_weight[ctx.padding_idx] = 0  # as nn.Embedding: the padding row never learns
        return grad_weight, None, None
