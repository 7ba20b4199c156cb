"""The named steps of the retrieval losses, each a pure function of tensors.

Shape legend: B batch, C candidate columns, D vector dim, N item rows (vocabulary).

As in tensorflow/recommenders, each refinement of the in-batch softmax is a separate, named
step (see :mod:`recstack.tasks.in_batch_softmax` for the order they are applied in); the
tasks of :mod:`recstack.tasks.retrieval` are built from them.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.models.retrieval_contract import ItemCatalogueModel, RetrievalPairs, is_retrieval_model
from recstack.parallel import rank_and_world

__all__ = [
    "FrequencyAwareTask",
    "apply_logq_correction",
    "apply_temperature",
    "count_item_rows",
    "mask_accidental_hits",
    "positive_item_rows",
    "positive_item_vectors",
    "retrieval_pairs",
    "scaled_cosine",
]


@runtime_checkable
class FrequencyAwareTask(Protocol):
    """A task that reads the training positives' item frequencies (log-Q, popularity sampling):
    the training workflow counts them in one pass when ``needs_item_frequencies``."""

    needs_item_frequencies: bool

    def set_item_frequencies(self, counts: Tensor) -> object:
        """``(R,)`` occurrences of each item table row among the training positives."""
        ...


def retrieval_pairs(model: nn.Module, batch: Batch) -> RetrievalPairs:
    """The (query, positive) pairs of ``batch``: ``model.retrieval_pairs(batch)`` for a
    :class:`~recstack.models.retrieval_contract.RetrievalModel`; for a bare module whose
    ``forward(batch)`` returns ``(users (B, D), items (B, D))``, one pair per row.

    Raises:
        ConfigError: the model returns anything else (a ranking model's logits ``(B,)``).
    """
    if is_retrieval_model(model):
        return model.retrieval_pairs(batch)  # type: ignore[attr-defined]
    output = model(batch)
    if not (isinstance(output, tuple) and len(output) == 2 and all(isinstance(t, Tensor) and t.dim() == 2 for t in output)):
        raise ConfigError(
            f"a retrieval task needs a retrieval model (user and item vectors), got {type(model).__name__}, "
            "whose forward returns no (users (B, D), items (B, D)) pair: is this a ranking model?"
        )
    users, items = output
    return RetrievalPairs(queries=users, positive_rows=None, positive_vectors=items, labels=batch.label)


def positive_item_rows(pairs: RetrievalPairs, batch: Batch, item_feature: str, device: torch.device, *, why: str) -> Tensor:
    """``(N,)`` item table rows of the pairs' positives: the model's, else ``batch.ids[item_feature]``."""
    if pairs.positive_rows is not None:
        return pairs.positive_rows.to(device)
    if item_feature not in batch.ids:
        raise ValueError(f"{why} read batch.ids[{item_feature!r}], which this batch lacks (ids: {sorted(batch.ids)})")
    return batch.ids[item_feature].to(device)


def positive_item_vectors(model: nn.Module, pairs: RetrievalPairs, rows: Tensor | None) -> Tensor:
    """``(N, D)`` the positives' vectors: the pairs' own, else ``model.encode_item_rows(rows)``."""
    if pairs.positive_vectors is not None:
        return pairs.positive_vectors
    if rows is None or not isinstance(model, ItemCatalogueModel):
        raise ConfigError(f"{type(model).__name__}: pairs without positive vectors need item rows and encode_item_rows")
    return model.encode_item_rows(rows)


def apply_temperature(logits: Tensor, *, temperature: float) -> Tensor:
    """Divide cosines by the temperature: ``0.05`` spreads [-1, 1] to [-20, 20].

    Example:
        >>> apply_temperature(torch.tensor([[0.5, -1.0]]), temperature=0.5)
        tensor([[ 1., -2.]])
    """
    return logits / temperature


def apply_logq_correction(logits: Tensor, *, item_log_probs: Tensor) -> Tensor:
    """Subtract each candidate's log sampling probability from its column (Yi et al. 2019).

    In-batch negatives are drawn with the data's item frequency, so a popular item is a negative
    far more often than a rare one and the uncorrected softmax learns to push it down.

    Args:
        logits: ``(B, C)`` query x candidate logits.
        item_log_probs: ``(C,)`` log probability that each candidate column was sampled.

    Example:
        >>> logits = torch.zeros(1, 2)
        >>> apply_logq_correction(logits, item_log_probs=torch.log(torch.tensor([0.5, 0.25])))
        tensor([[0.6931, 1.3863]])
    """
    return logits - item_log_probs.unsqueeze(0)  # (B, C) - (1, C)


def mask_accidental_hits(
    logits: Tensor, *, query_item_rows: Tensor, candidate_item_rows: Tensor, keep_diagonal: bool = True,
    target_columns: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Set ``logits[i, j]`` to the lowest finite value where candidate j is row i's own positive.

    In an in-batch softmax two rows may hold the same item; without the mask that item would be
    both row i's target (the diagonal) and a negative (column j), pulling in opposite directions.

    Args:
        logits: ``(B, C)``.
        query_item_rows: ``(B,)`` item table row of each query's positive.
        candidate_item_rows: ``(C,)`` item table row of each candidate column.
        keep_diagonal: leave ``logits[i, i]`` alone (in-batch: the diagonal is the target).
        target_columns: ``(B,)`` each row's target column, left alone instead of the diagonal
            (a chunk of rows, or candidates gathered from several ranks).

    Example:
        >>> rows = torch.tensor([5, 7, 5])
        >>> masked = mask_accidental_hits(torch.zeros(3, 3), query_item_rows=rows, candidate_item_rows=rows)
        >>> (masked < -1e30).int().tolist()  # row 0's item 5 is also column 2, and vice versa
        [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    """
    hits = query_item_rows.unsqueeze(1) == candidate_item_rows.unsqueeze(0)  # (B, C)
    if target_columns is not None:
        hits[torch.arange(hits.shape[0], device=hits.device), target_columns] = False
    elif keep_diagonal:
        hits = hits & ~torch.eye(*hits.shape, dtype=torch.bool, device=hits.device)
    # finite, not -inf: a masked logit then never turns into NaN through inf - inf
    return logits.masked_fill(hits, torch.finfo(logits.dtype).min)


def scaled_cosine(user_vectors: Tensor, item_vectors: Tensor, *, scale: float) -> Tensor:
    """Row-wise ``scale * <u_b, i_b>``: ``(B, D), (B, D) -> (B,)``."""
    return scale * (user_vectors * item_vectors).sum(dim=-1)


def scaled_cosine_of_pairs(model: nn.Module, batch: Batch, item_feature: str, *, scale: float) -> Tensor:
    """``(N,)`` ``scale * <query, positive>`` of the model's pairs on ``batch``."""
    pairs = retrieval_pairs(model, batch)
    rows = None
    if pairs.positive_vectors is None:
        rows = positive_item_rows(pairs, batch, item_feature, pairs.queries.device, why="positive item vectors")
    items = positive_item_vectors(model, pairs, rows)
    return scaled_cosine(pairs.queries.float(), items.float(), scale=scale)


def count_item_rows(batches: Iterable[Batch], *, num_rows: int, item_feature: str = "item_id") -> Tensor:
    """``(N,)`` int64 count of each item row over one pass of the training batches.

    Feed the result to ``set_item_frequencies``; count the same rows the loss sees (all rows).
    ``item_feature`` is an id feature (one row per batch row) or a sequence feature (every
    non-padding position: a sequence model's next-item targets).
    """
    counts = torch.zeros(num_rows, dtype=torch.int64)
    for batch in batches:
        if item_feature in batch.sequences:
            values = batch.sequences[item_feature].reshape(-1).cpu()
            counts += torch.bincount(values[values != 0], minlength=num_rows)
        else:
            counts += torch.bincount(batch.ids[item_feature].reshape(-1).cpu(), minlength=num_rows)
    return counts


# ---- helpers shared by the tasks ---------------------------------------------------------------
def _row_weights(labels: Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    return None if labels is None else labels.to(device=device, dtype=dtype)  # (N,)


def _weighted_mean(per_row: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of ``(B,)`` losses weighted by ``(B,)`` weights; 0 (with a graph) when all weigh 0."""
    if weights is None:
        return per_row.mean()
    total = weights.sum()
    return (per_row * weights).sum() / total.clamp(min=torch.finfo(per_row.dtype).tiny)


def _log_probs_from_counts(counts: Tensor) -> Tensor:
    # an item seen in a batch was sampled at least once; the clamp also keeps padding/OOV finite
    counts = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
    return torch.log(counts / counts.sum()).float()  # (N,)


# ---- distributed: negatives from every rank's batch --------------------------------------------
def _world_size() -> int:
    return rank_and_world()[1]


class _AllGatherRows(torch.autograd.Function):
    """Concatenates every rank's equally-sized ``(Bmax, D)`` block; the backward all-reduces the
    full gradient and keeps this rank's block.

    Not ``torch.distributed.nn.functional.all_gather``: on gloo its backward is an all-to-all
    that aborted about one process exit in four here ("terminate called without an active
    exception"); an all-reduce is supported everywhere and costs W times the traffic of a
    reduce-scatter, negligible for a batch of item vectors.
    """

    @staticmethod
    def forward(ctx, block: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), block.shape[0]
        blocks = [torch.empty_like(block) for _ in range(dist.get_world_size())]
        dist.all_gather(blocks, block.contiguous())
        return torch.cat(blocks)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _gather_items(item_vectors: Tensor, item_rows: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Every rank's item vectors ``(W * Bmax, D)`` (batches padded to the largest), their rows,
    this rank's target columns ``(B,)`` and the padded-column mask ``(W * Bmax,)``.

    The gather is differentiable (:class:`_AllGatherRows`): each rank's gradient for its own
    items sums the contributions of every rank's loss (DDP then averages them).
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    size = torch.tensor([item_vectors.shape[0]], device=item_vectors.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    largest = max(sizes_list)
    pad = largest - item_vectors.shape[0]
    vectors = _AllGatherRows.apply(F.pad(item_vectors, (0, 0, 0, pad)))  # (W * Bmax, D)
    padded = torch.ones(world, largest, dtype=torch.bool, device=item_vectors.device)
    for other, count in enumerate(sizes_list):
        padded[other, :count] = False
    rows = None
    if item_rows is not None:
        gathered_rows = [torch.zeros(largest, dtype=item_rows.dtype, device=item_rows.device) for _ in range(world)]
        dist.all_gather(gathered_rows, F.pad(item_rows, (0, pad)))
        rows = torch.cat(gathered_rows)
    targets = rank * largest + torch.arange(item_vectors.shape[0], device=item_vectors.device)
    return vectors, rows, targets, padded.reshape(-1)
