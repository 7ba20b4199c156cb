"""Retrieval tasks: losses for two-tower models whose ``forward`` returns unit vectors.

Shape legend: B batch, D vector dim, K sampled negatives per row, N item rows (vocabulary).

A two-tower model's ``forward(batch)`` returns ``(user_vectors (B, D), item_vectors (B, D))``,
both already L2-normalised, so ``user @ item.T`` is a cosine in [-1, 1]; a temperature (or its
inverse, seed 001's ``gamma``) stretches it into a logit. As in tensorflow/recommenders, each
refinement of the in-batch softmax is a separate, named step, applied in this order::

    logits = user_vectors @ item_vectors.T                        # (B, B) cosines
    logits = apply_temperature(logits, temperature=0.05)          # sharpen
    logits = apply_logq_correction(logits, item_log_probs=...)    # popular items are over-sampled
    logits = mask_accidental_hits(logits, item_rows=...)          # the same item twice in a batch
    loss = weighted cross-entropy with targets = the diagonal

Labels. Retrieval data is implicit: every row is a (user, positive item) pair. When the batch has
a label, it weights each row's loss term, so rows labelled 0 are dropped as queries; their items
stay in the candidate set as extra negatives for the other rows.
"""

from __future__ import annotations

import enum
from typing import Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch, OOV_INDEX

__all__ = [
    "InBatchSoftmaxTask",
    "NegativeDistribution",
    "NegativeSamplingTask",
    "PointwiseTask",
    "apply_logq_correction",
    "apply_temperature",
    "count_item_rows",
    "mask_accidental_hits",
    "scaled_cosine",
]

class NegativeDistribution(str, enum.Enum):
    """How :class:`NegativeSamplingTask` draws negative item rows."""

    UNIFORM = "uniform"  # every real item row equally
    POPULARITY = "popularity"  # ~ count ** 0.75, as word2vec


# Rows below this are padding (0) and out-of-vocabulary (1): never real items to sample.
FIRST_ITEM_ROW = OOV_INDEX + 1


class ItemCatalogueModel(Protocol):
    """What :class:`NegativeSamplingTask` needs beyond ``forward``: item vectors from table rows."""

    num_item_rows: int

    def encode_item_rows(self, item_rows: Tensor) -> Tensor:
        """``(N,)`` int64 rows of the item table -> ``(N, D)`` unit vectors."""
        ...


# ---- the named steps ---------------------------------------------------------------------------
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
    logits: Tensor, *, query_item_rows: Tensor, candidate_item_rows: Tensor, keep_diagonal: bool = True
) -> Tensor:
    """Set ``logits[i, j]`` to the lowest finite value where candidate j is row i's own positive.

    In an in-batch softmax two rows may hold the same item; without the mask that item would be
    both row i's target (the diagonal) and a negative (column j), pulling in opposite directions.

    Args:
        logits: ``(B, C)``.
        query_item_rows: ``(B,)`` item table row of each query's positive.
        candidate_item_rows: ``(C,)`` item table row of each candidate column.
        keep_diagonal: leave ``logits[i, i]`` alone (in-batch: the diagonal is the target).

    Example:
        >>> rows = torch.tensor([5, 7, 5])
        >>> masked = mask_accidental_hits(torch.zeros(3, 3), query_item_rows=rows, candidate_item_rows=rows)
        >>> (masked < -1e30).int().tolist()  # row 0's item 5 is also column 2, and vice versa
        [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    """
    hits = query_item_rows.unsqueeze(1) == candidate_item_rows.unsqueeze(0)  # (B, C)
    if keep_diagonal:
        hits = hits & ~torch.eye(*hits.shape, dtype=torch.bool, device=hits.device)
    # finite, not -inf: a masked logit then never turns into NaN through inf - inf
    return logits.masked_fill(hits, torch.finfo(logits.dtype).min)


def scaled_cosine(user_vectors: Tensor, item_vectors: Tensor, *, scale: float) -> Tensor:
    """Row-wise ``scale * <u_b, i_b>``: ``(B, D), (B, D) -> (B,)``."""
    return scale * (user_vectors * item_vectors).sum(dim=-1)


def count_item_rows(batches: Iterable[Batch], *, num_rows: int, item_feature: str = "item_id") -> Tensor:
    """``(N,)`` int64 count of each item row over one pass of the training batches.

    Feed the result to ``set_item_frequencies``; count the same rows the loss sees (all rows).
    """
    counts = torch.zeros(num_rows, dtype=torch.int64)
    for batch in batches:
        counts += torch.bincount(batch.ids[item_feature].reshape(-1).cpu(), minlength=num_rows)
    return counts


def _row_weights(batch: Batch, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    return None if batch.label is None else batch.label.to(device=device, dtype=dtype)  # (B,)


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


# ---- tasks -------------------------------------------------------------------------------------
class InBatchSoftmaxTask:
    """Softmax over the batch's items: each row's positive against every other row's item.

    Args:
        temperature: logits = cosine / temperature.
        logq_correction: subtract log sampling probability of each in-batch item; needs
            :meth:`set_item_frequencies` (exact counts from one pass: :func:`count_item_rows`).
        remove_accidental_hits: mask columns that hold the query's own item (j != i).
        item_feature: the categorical feature whose table row identifies an item; only read by
            the two refinements above (turn both off for towers without an item id).
        gather_negatives: under torch.distributed, score each row against the items of every
            rank's batch (world x more negatives); gradients flow back to each rank's own items.

    Example:
        >>> task = InBatchSoftmaxTask(temperature=0.1, logq_correction=False)
        >>> class Towers(nn.Module):
        ...     def forward(self, batch):
        ...         return torch.eye(2), torch.eye(2)  # (B, D) users, (B, D) items
        >>> batch = Batch(ids={"item_id": torch.tensor([2, 3])})
        >>> round(task.loss(Towers(), batch).item(), 6)  # log(1 + e^-10)
        4.5e-05
    """

    def __init__(
        self,
        *,
        temperature: float = 0.05,
        logq_correction: bool = True,
        remove_accidental_hits: bool = True,
        item_feature: str = "item_id",
        gather_negatives: bool = False,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.logq_correction = logq_correction
        self.remove_accidental_hits = remove_accidental_hits
        self.item_feature = item_feature
        self.gather_negatives = gather_negatives
        self.item_log_probs: Tensor | None = None  # (N,) by item table row

    def set_item_frequencies(self, counts: Tensor) -> "InBatchSoftmaxTask":
        """``(N,)`` occurrences of each item table row in the training data."""
        self.item_log_probs = _log_probs_from_counts(counts)
        return self

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(B, B)`` refined logits; row i's target is column i (see :meth:`logits_and_targets`)."""
        return self.logits_and_targets(model, batch)[0]

    def logits_and_targets(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(B, C)`` refined logits and ``(B,)`` target columns; C = B, or the items of every
        rank's batch with ``gather_negatives``."""
        user_vectors, item_vectors = model(batch)  # (B, D), (B, D)
        needs_rows = self.logq_correction or self.remove_accidental_hits
        item_rows = self._item_rows(batch, user_vectors.device) if needs_rows else None  # (B,)
        candidates, candidate_rows, targets, padded = item_vectors.float(), item_rows, None, None
        if self.gather_negatives and _world_size() > 1:
            candidates, candidate_rows, targets, padded = _gather_items(item_vectors.float(), item_rows)
        logits = user_vectors.float() @ candidates.T  # (B, C) cosines
        logits = apply_temperature(logits, temperature=self.temperature)
        if self.logq_correction:
            if self.item_log_probs is None:
                raise ValueError(
                    "logq_correction needs item frequencies: call task.set_item_frequencies(counts) "
                    "(see count_item_rows), or build the task with logq_correction=False"
                )
            self.item_log_probs = self.item_log_probs.to(logits.device)
            logits = apply_logq_correction(logits, item_log_probs=self.item_log_probs[candidate_rows])
        if targets is None:
            targets = torch.arange(logits.shape[0], device=logits.device)  # (B,) the diagonal
            if self.remove_accidental_hits:
                logits = mask_accidental_hits(logits, query_item_rows=item_rows, candidate_item_rows=candidate_rows)
            return logits, targets
        if self.remove_accidental_hits:
            hits = item_rows.unsqueeze(1) == candidate_rows.unsqueeze(0)  # (B, C)
            hits[torch.arange(len(targets), device=hits.device), targets] = False
            logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
        return logits.masked_fill(padded.unsqueeze(0), torch.finfo(logits.dtype).min), targets

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits, targets = self.logits_and_targets(model, batch)  # (B, C), (B,)
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        return _weighted_mean(per_row, _row_weights(batch, per_row.dtype, per_row.device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(B,)`` cosine / temperature of each row's (user, item) pair."""
        user_vectors, item_vectors = model(batch)
        return scaled_cosine(user_vectors.float(), item_vectors.float(), scale=1.0 / self.temperature)

    def _item_rows(self, batch: Batch, device: torch.device) -> Tensor:
        if self.item_feature not in batch.ids:
            raise ValueError(
                f"log-Q correction and accidental-hit removal read batch.ids[{self.item_feature!r}], "
                f"which this batch lacks (ids: {sorted(batch.ids)}); set item_feature or turn both off"
            )
        return batch.ids[self.item_feature].to(device)

    def __repr__(self) -> str:
        return (
            f"InBatchSoftmaxTask(temperature={self.temperature}, logq_correction={self.logq_correction}, "
            f"remove_accidental_hits={self.remove_accidental_hits}, item_feature={self.item_feature!r})"
        )


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_items(item_vectors: Tensor, item_rows: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Every rank's item vectors ``(W * Bmax, D)`` (batches padded to the largest), their rows,
    this rank's target columns ``(B,)`` and the padded-column mask ``(W * Bmax,)``.

    ``torch.distributed.nn.functional.all_gather`` is differentiable: each rank's gradient for
    its own items sums the contributions of every rank's loss (DDP then averages them).
    """
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    rank, world = dist.get_rank(), dist.get_world_size()
    size = torch.tensor([item_vectors.shape[0]], device=item_vectors.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    largest = max(sizes_list)
    pad = largest - item_vectors.shape[0]
    vectors = torch.cat(all_gather(F.pad(item_vectors, (0, 0, 0, pad))))  # (W * Bmax, D)
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


class PointwiseTask:
    """Binary cross-entropy on ``gamma * cosine`` with labelled (user, item, 0/1) rows (seed 001).

    Args:
        gamma: the cosine's scale (10 in seed 001; the inverse of a temperature).
        pos_weight: weight of the positive term (seed 001: 1.2); None for 1.

    ``predict`` returns probabilities ``sigmoid(gamma * cosine)``, the scores a logloss/AUC
    evaluation expects; they rank exactly as the scaled cosine.
    """

    def __init__(self, *, gamma: float = 10.0, pos_weight: float | None = None) -> None:
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.gamma = gamma
        self.pos_weight = pos_weight

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        user_vectors, item_vectors = model(batch)  # (B, D), (B, D)
        return scaled_cosine(user_vectors.float(), item_vectors.float(), scale=self.gamma)  # (B,)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if batch.label is None:
            raise ValueError("PointwiseTask.loss needs batch.label")
        logits = self.logits(model, batch)  # (B,)
        labels = batch.label.to(device=logits.device, dtype=logits.dtype)  # (B,)
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        return torch.sigmoid(self.logits(model, batch))  # probabilities (B,)

    def __repr__(self) -> str:
        return f"PointwiseTask(gamma={self.gamma}, pos_weight={self.pos_weight})"


class NegativeSamplingTask:
    """Softmax over ``[positive, K sampled negatives]`` per row, for implicit feedback.

    Negatives are item table rows drawn per row (rows 0/1, padding and OOV, never), then encoded
    by ``model.encode_item_rows`` (see :class:`ItemCatalogueModel`). Limitation: that needs item
    vectors from the row alone, which holds when the item tower reads only the item id, or when
    the model keeps a catalogue table of every item's other features; a tower over per-request
    item features cannot be sampled this way (use :class:`InBatchSoftmaxTask`). A negative equal
    to the row's positive is masked (accidental hit). No log-Q correction: popularity sampling
    (word2vec's ``counts ** 0.75``) is meant to push popular items down.

    Args:
        num_negatives: K negatives per row.
        distribution: ``"uniform"`` over item rows, or ``"popularity"`` ~ ``counts ** 0.75``
            (needs :meth:`set_item_frequencies`).
        temperature: logits = cosine / temperature.
        item_feature: the categorical feature holding the positive's item table row.
        seed: seed of the sampler, for reproducible runs.
    """

    def __init__(
        self,
        *,
        num_negatives: int = 20,
        distribution: NegativeDistribution | str = NegativeDistribution.UNIFORM,
        temperature: float = 0.05,
        item_feature: str = "item_id",
        seed: int | None = None,
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_negatives = num_negatives
        self.distribution = NegativeDistribution(distribution)  # ValueError on an unknown name
        self.temperature = temperature
        self.item_feature = item_feature
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.sampling_weights: Tensor | None = None  # (N,) unnormalised, by item table row

    def set_item_frequencies(self, counts: Tensor) -> "NegativeSamplingTask":
        """``(N,)`` occurrences of each item row; the popularity distribution is ``counts ** 0.75``."""
        weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0.0) ** 0.75
        weights[:FIRST_ITEM_ROW] = 0.0
        if not weights.sum() > 0:
            raise ValueError("item counts are all zero")
        self.sampling_weights = weights
        return self

    def sample(self, batch_size: int, num_item_rows: int) -> Tensor:
        """``(B, K)`` int64 sampled item rows, on the CPU."""
        shape = (batch_size, self.num_negatives)
        if self.distribution is NegativeDistribution.UNIFORM:
            return torch.randint(FIRST_ITEM_ROW, num_item_rows, shape, generator=self.generator)
        if self.sampling_weights is None:
            raise ValueError("distribution='popularity' needs task.set_item_frequencies(counts)")
        flat = torch.multinomial(
            self.sampling_weights, batch_size * self.num_negatives, replacement=True, generator=self.generator
        )
        return flat.view(shape)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        user_vectors, item_vectors = model(batch)  # (B, D), (B, D)
        user_vectors, item_vectors = user_vectors.float(), item_vectors.float()
        B, device = user_vectors.shape[0], user_vectors.device
        num_item_rows = getattr(model, "num_item_rows", None)
        if num_item_rows is None:
            raise ValueError(
                f"NegativeSamplingTask needs a model with num_item_rows and encode_item_rows, got {type(model).__name__}"
            )
        negative_rows = self.sample(B, num_item_rows).to(device)  # (B, K)
        # encode each distinct sampled row once: B*K rows hold many repeats
        unique_rows, inverse = torch.unique(negative_rows, return_inverse=True)  # (U,), (B, K)
        negative_vectors = model.encode_item_rows(unique_rows).float()[inverse]  # (B, K, D)

        positive = (user_vectors * item_vectors).sum(-1, keepdim=True)  # (B, 1)
        negative = torch.einsum("bd,bkd->bk", user_vectors, negative_vectors)  # (B, K)
        logits = torch.cat([positive, negative], dim=1)  # (B, 1+K) cosines, the positive first
        logits = apply_temperature(logits, temperature=self.temperature)
        positive_rows = batch.ids[self.item_feature].to(device)  # (B,)
        hits = negative_rows == positive_rows.unsqueeze(1)  # (B, K) accidental hits
        hits = torch.cat([torch.zeros_like(hits[:, :1]), hits], dim=1)  # (B, 1+K): never the positive
        logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
        targets = torch.zeros(B, dtype=torch.long, device=device)  # the positive is column 0
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        return _weighted_mean(per_row, _row_weights(batch, per_row.dtype, device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(B,)`` cosine / temperature of each row's (user, item) pair."""
        user_vectors, item_vectors = model(batch)
        return scaled_cosine(user_vectors.float(), item_vectors.float(), scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return (
            f"NegativeSamplingTask(num_negatives={self.num_negatives}, distribution={self.distribution.value!r}, "
            f"temperature={self.temperature})"
        )
