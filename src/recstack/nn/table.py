"""An ``nn.Embedding`` whose dense CPU backward is one ``index_add_``, and one autograd node
for many lookups.

torch's CPU ``embedding_dense_backward`` (2.13) costs ~60-80 us for a 1,024-id batch whatever
the table size, and ~2.7 ms for a 1,024 x 50 history; ``zeros(table).index_add_(0, ids, grad)``
computes the same gradient in ~15-20 us and ~0.9 ms. The saving only shows where it is not
eaten by the Python of an autograd Function (~25 us a call): for a long history, and for the
10-20 id tables of a ranking model looked up together by :func:`lookup_many`, one node for
all of them (``benchmarks/cpu_kernels.py``: 2-3x and ~1.4x forward + backward).

Everything else is ``nn.Embedding``'s: the same parameters and state_dict, ``sparse=True``
(sparse gradients), ``max_norm`` and ``scale_grad_by_freq`` take torch's own path, and so do
CUDA tensors (``index_add_`` there uses atomics: not deterministic), evaluation and export
(``torch.no_grad()`` or a frozen table).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Embedding", "lookup_many"]

# One table's lookup takes the index_add path from this many ids (a 1,024 x 50 history: yes;
# a batch of 1,024 ids: no, torch's path is as fast there; benchmarks/cpu_kernels.py).
MIN_IDS_FOR_ONE_TABLE = 4096


class Embedding(nn.Embedding):
    """``nn.Embedding`` with the faster dense backward on CPU; same arguments, same output."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Embedding's name
        # below a few thousand ids the autograd Function's Python costs what index_add_ saves
        if not self.fast_backward() or input.numel() < MIN_IDS_FOR_ONE_TABLE:
            return super().forward(input)
        return _IndexAddLookups.apply((self.padding_idx,), self.weight, input)[0]

    def fast_backward(self) -> bool:
        """Whether a lookup now goes through the index_add backward (a trainable dense CPU
        table, gradients on, not being traced for export); torch's own path otherwise."""
        weight = self.weight
        return (
            not self.sparse
            and self.max_norm is None
            and not self.scale_grad_by_freq
            and weight.device.type == "cpu"
            and weight.requires_grad
            and torch.is_grad_enabled()
            and not torch.jit.is_tracing()  # export records torch's own op
        )


def lookup_many(tables: Sequence[nn.Embedding], ids: Sequence[Tensor]) -> list[Tensor]:
    """``[tables[i](ids[i]) ...]``, as one autograd node when every table is an
    :class:`Embedding` on its fast path; table by table otherwise. Same values, same gradients."""
    if len(tables) > 1 and all(isinstance(t, Embedding) and t.fast_backward() for t in tables):
        padding = tuple(t.padding_idx for t in tables)
        return list(_IndexAddLookups.apply(padding, *(t.weight for t in tables), *ids))
    return [table(i) for table, i in zip(tables, ids)]


class _IndexAddLookups(torch.autograd.Function):
    """Lookups of ids[k] in weights[k]; inputs ``(padding_idxs, *weights, *ids)``."""

    @staticmethod
    def forward(ctx, padding_idxs: tuple[int | None, ...], *tensors: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        count = len(padding_idxs)
        weights, ids = tensors[:count], tensors[count:]
        ctx.save_for_backward(*ids)
        ctx.num_rows = [w.shape[0] for w in weights]
        ctx.padding_idxs = padding_idxs
        return tuple(torch.embedding(w, i) for w, i in zip(weights, ids))  # each (*ids.shape, D)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        ids = ctx.saved_tensors
        count = len(ids)
        weight_grads: list[Tensor | None] = []
        for k, (grad, rows, padding_idx) in enumerate(zip(grads, ctx.num_rows, ctx.padding_idxs)):
            if grad is None or not ctx.needs_input_grad[1 + k]:
                weight_grads.append(None)
                continue
            width = grad.shape[-1]
            grad_weight = grad.new_zeros(rows, width)  # (V, D)
            # contiguous: index_add_ from a strided source (a slice of a cat's gradient) is ~4x slower
            grad_weight.index_add_(0, ids[k].reshape(-1), grad.reshape(-1, width).contiguous())
            if padding_idx is not None:
                grad_weight.select(0, padding_idx).zero_()  # as nn.Embedding: the padding row never learns
            weight_grads.append(grad_weight)
        return (None, *weight_grads, *([None] * count))
