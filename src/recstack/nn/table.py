"""An ``nn.Embedding`` whose dense CPU backward is one ``index_add_``, and many tables looked
up as one autograd node.

torch's CPU ``embedding_dense_backward`` (2.13) costs ~60-80 us for a 1,024-id batch whatever
the table size, and ~2.7 ms for a 1,024 x 50 history; ``zeros(table).index_add_(0, ids, grad)``
computes the same gradient in ~15-20 us and ~0.9 ms. The saving only shows where it is not
eaten by the Python of an autograd Function (~25 us a call): for a long history, and for the
10-20 id tables of a ranking model looked up together by :func:`lookup_fields`: one node
whose backward is one ``zeros`` and one ``index_add_`` for all the tables (each table's
gradient is a slice of that buffer), instead of one pair per table.

Everything else is ``nn.Embedding``'s: the same parameters and state_dict, ``sparse=True``
(sparse gradients), ``max_norm`` and ``scale_grad_by_freq`` take torch's own path, and so do
CUDA tensors (``index_add_`` there uses atomics: not deterministic), evaluation and export
(``torch.no_grad()`` or a frozen table), ``torch.compile`` and ``RECSTACK_FUSED=0``: the gate
is :func:`recstack.nn.fused.fast_path_applies`, the one every fast path asks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recstack.nn.fused import fast_path_applies

__all__ = ["Embedding", "FieldLookup", "lookup_fields", "lookup_many"]

# One table's lookup takes the index_add path from this many ids (a 1,024 x 50 history: yes;
# a batch of 1,024 ids: no, torch's path is as fast there; benchmarks/cpu_kernels.py).
MIN_IDS_FOR_ONE_TABLE = 4096


class Embedding(nn.Embedding):
    """``nn.Embedding`` with the faster dense backward on CPU; same arguments, same output."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Embedding's name
        # below a few thousand ids the autograd Function's Python costs what index_add_ saves
        if not self.fast_backward() or input.numel() < MIN_IDS_FOR_ONE_TABLE:
            return super().forward(input)
        return _StackedLookups.apply(((0,), (self.padding_idx,)), self.weight, input).squeeze(-2)

    def fast_backward(self) -> bool:
        """Whether a lookup now goes through the index_add backward (a trainable dense CPU
        table, and :func:`~recstack.nn.fused.fast_path_applies`); torch's own path otherwise."""
        return self.fast_backward_possible() and _fast_weight(self.weight) and fast_path_applies(self.weight)

    def fast_backward_possible(self) -> bool:
        """The fixed half of :meth:`fast_backward`: dense gradients, no max_norm, no
        scale_grad_by_freq."""
        return not self.sparse and self.max_norm is None and not self.scale_grad_by_freq


def lookup_fields(tables: Sequence[nn.Embedding], ids: Sequence[Tensor]) -> Tensor:
    """``torch.stack([tables[k](ids[k]) ...], dim=-2)``: ``(*S, F, D)`` for F tables of one
    dim D and ids of one shape S; tables may repeat (shared tables). One autograd node when
    every table is an :class:`Embedding` on its fast path; table by table otherwise.
    Same values, same gradients. Code that looks the same tables up at every step keeps a
    :class:`FieldLookup` instead, which does the table bookkeeping once."""
    return FieldLookup(tables)(ids)


class FieldLookup:
    """:func:`lookup_fields` over fixed ``tables``, with their layout worked out once
    (~60 us of Python a call otherwise, twice a step in a DeepFM)."""

    def __init__(self, tables: Sequence[nn.Embedding]):
        if not tables:
            raise ValueError("lookup_fields needs at least one table")
        dims = {t.embedding_dim for t in tables}
        if len(dims) > 1:
            raise ValueError(f"lookup_fields needs tables of one dim, got dims {sorted(dims)}")
        self.tables = list(tables)
        positions: dict[int, int] = {}  # id(table) -> its position among the distinct tables
        self._table_of_field = tuple(positions.setdefault(id(t), len(positions)) for t in tables)
        self._distinct = list({id(t): t for t in tables}.values())
        self._layout = (self._table_of_field, tuple(t.padding_idx for t in self._distinct))
        self._can_be_fast = all(isinstance(t, Embedding) and t.fast_backward_possible() for t in self._distinct)

    def __call__(self, ids: Sequence[Tensor]) -> Tensor:
        """Args: ids, one ``S``-shaped tensor per table. Returns ``(*S, F, D)``."""
        if len(ids) != len(self.tables):
            raise ValueError(f"lookup_fields needs one ids tensor per table, got {len(self.tables)} tables and {len(ids)} ids")
        shape = ids[0].shape
        if any(i.shape != shape for i in ids):
            raise ValueError(f"lookup_fields needs ids of one shape, got shapes {sorted({tuple(i.shape) for i in ids})}")
        fast = self._can_be_fast and fast_path_applies(self._distinct[0].weight)
        if not (fast and all(_fast_weight(t.weight) for t in self._distinct)):
            return torch.stack([table(i) for table, i in zip(self.tables, ids)], dim=-2)
        return _StackedLookups.apply(self._layout, *(t.weight for t in self._distinct), *ids)


def _fast_weight(weight: Tensor) -> bool:
    """A trainable CPU table (the rest of the decision is the one gate, ``nn/fused.py``)."""
    return weight.requires_grad and weight.device.type == "cpu"


def lookup_many(tables: Sequence[nn.Embedding], ids: Sequence[Tensor]) -> list[Tensor]:
    """``[tables[k](ids[k]) ...]``; lookups of one dim and one ids shape share one
    :func:`lookup_fields` node. Same values, same gradients."""
    groups: dict[tuple, list[int]] = {}
    for k, (table, i) in enumerate(zip(tables, ids)):
        groups.setdefault((table.embedding_dim, tuple(i.shape)), []).append(k)
    looked_up: list[Tensor | None] = [None] * len(tables)
    for members in groups.values():
        if len(members) == 1:
            looked_up[members[0]] = tables[members[0]](ids[members[0]])
            continue
        stacked = lookup_fields([tables[k] for k in members], [ids[k] for k in members])
        for k, values in zip(members, stacked.unbind(-2)):
            looked_up[k] = values
    return looked_up  # type: ignore[return-value]


class _StackedLookups(torch.autograd.Function):
    """``(*S, F, D)`` lookups of ids[f] in weights[table_of_field[f]]; inputs
    ``((table_of_field, padding_idxs), *weights, *ids)`` with one entry of padding_idxs per
    distinct weight. The backward adds every gradient row into one zero buffer holding all
    the tables one after another, and hands each table its slice."""

    @staticmethod
    def forward(ctx, layout: tuple[tuple[int, ...], tuple[int | None, ...]], *tensors: Tensor) -> Tensor:  # type: ignore[override]
        table_of_field, padding_idxs = layout
        weights, ids = tensors[: len(padding_idxs)], tensors[len(padding_idxs) :]
        ctx.save_for_backward(*ids)
        ctx.layout = layout
        ctx.rows = [w.shape[0] for w in weights]
        ctx.dtype = weights[0].dtype
        looked_up = [torch.embedding(weights[t], i) for t, i in zip(table_of_field, ids)]
        return torch.stack(looked_up, dim=-2) if len(looked_up) > 1 else looked_up[0].unsqueeze(-2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        ids = ctx.saved_tensors
        shift, padding_rows = _row_layout(tuple(ctx.rows), *ctx.layout)
        flat = torch.stack(ids, dim=-1) if len(ids) > 1 else ids[0].unsqueeze(-1)  # (*S, F)
        if shift is not None:
            flat = flat + shift  # rows in the stacked buffer
        width = grad.shape[-1]
        grad_all = torch.zeros(sum(ctx.rows), width, dtype=ctx.dtype)  # every table's rows, stacked
        # contiguous: index_add_ from a strided source (a slice of a cat's gradient) is ~4x slower
        source = grad.reshape(-1, width).to(ctx.dtype).contiguous()
        if width == 1:  # 1-d weights (a linear model's): the 1-d index_add_ is ~2x faster
            grad_all.view(-1).index_add_(0, flat.reshape(-1), source.view(-1))
        else:
            grad_all.index_add_(0, flat.reshape(-1), source)
        if padding_rows is not None:  # as nn.Embedding: the padding row never learns
            grad_all.index_fill_(0, padding_rows, 0.0)
        weight_grads = [g if ctx.needs_input_grad[1 + t] else None for t, g in enumerate(grad_all.split(ctx.rows))]
        return (None, *weight_grads, *([None] * len(ids)))


@functools.lru_cache(maxsize=256)
def _row_layout(
    rows: tuple[int, ...], table_of_field: tuple[int, ...], padding_idxs: tuple[int | None, ...]
) -> tuple[Tensor | None, Tensor | None]:
    """For tables of ``rows`` rows stacked in one buffer: each field's row offset (None when
    all are 0) and the buffer rows of the padding rows (None when there are none). Built
    once per model layout (read-only tensors, shared by every step)."""
    offsets = [0]
    for count in rows[:-1]:
        offsets.append(offsets[-1] + count)
    shift = torch.tensor([offsets[t] for t in table_of_field]) if len(rows) > 1 else None
    padding = [offset + p for offset, p in zip(offsets, padding_idxs) if p is not None]
    return shift, (torch.tensor(padding) if padding else None)
