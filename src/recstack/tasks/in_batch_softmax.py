"""In-batch softmax: each row's positive item against every other row's item.

Shape legend: B batch, C candidate columns, D vector dim, N item rows (vocabulary).

The model gives N (query, positive item) pairs (``retrieval_pairs``: one per row for two towers,
one per sequence position for a sequence model), usually L2-normalised, so ``user @ item.T`` is a
cosine in [-1, 1]; a temperature (or its inverse, seed 001's ``gamma``) stretches it into a logit. The refinements are the named steps
of :mod:`recstack.tasks.retrieval_steps`, applied in this order::

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

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.tasks.retrieval_steps import (
    _gather_items,
    _log_probs_from_counts,
    _row_weights,
    _weighted_mean,
    _world_size,
    apply_logq_correction,
    apply_temperature,
    mask_accidental_hits,
    positive_item_rows,
    positive_item_vectors,
    retrieval_pairs,
    scaled_cosine_of_pairs,
)

__all__ = ["InBatchSoftmaxTask"]

_CHUNK_ELEMENTS = 1 << 20  # logits per chunk of the loss: 4 MiB in float32, heap-allocated


class _Scores(NamedTuple):
    """One batch's in-batch softmax inputs: N queries against C candidates."""

    queries: Tensor  # (N, D) float
    candidates: Tensor  # (C, D) float
    query_rows: Tensor | None  # (N,) item rows of the pairs' positives
    candidate_rows: Tensor | None  # (C,)
    targets: Tensor  # (N,) each pair's target column
    log_q: Tensor | None  # (C,) log sampling probability of each candidate (log-Q correction)
    padded: Tensor | None  # (C,) padding columns of gathered candidates
    labels: Tensor | None  # (N,) row weights


@register_task("in_batch_softmax")
class InBatchSoftmaxTask(RegisteredTask, SingleHeadTask):
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

    family: ClassVar[TaskType] = TaskType.RETRIEVAL

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: in_batch_softmax, temperature: 0.05, ...}``;
        ``item_feature`` None: the model's item-id feature (resolved when a run trains)."""

        temperature: float = 0.05
        logq_correction: bool = True
        remove_accidental_hits: bool = True
        item_feature: str | None = None
        gather_negatives: bool = False

        def validate(self) -> None:
            require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")

    @classmethod
    def from_params(cls, params: "InBatchSoftmaxTask.Params") -> "InBatchSoftmaxTask":
        return cls(
            temperature=params.temperature,
            logq_correction=params.logq_correction,
            remove_accidental_hits=params.remove_accidental_hits,
            item_feature=params.item_feature or "item_id",
            gather_negatives=params.gather_negatives,
        )

    def __init__(
        self,
        *,
        temperature: float = 0.05,
        logq_correction: bool = True,
        remove_accidental_hits: bool = True,
        item_feature: str = "item_id",
        gather_negatives: bool = False,
    ) -> None:
        self.params = self.Params(
            temperature=temperature,
            logq_correction=logq_correction,
            remove_accidental_hits=remove_accidental_hits,
            item_feature=item_feature,
            gather_negatives=gather_negatives,
        )  # checked: ConfigError (a ValueError) naming the parameter
        self.temperature = self.params.temperature
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
        """``(N, N)`` refined logits; pair i's target is column i (see :meth:`logits_and_targets`)."""
        return self.logits_and_targets(model, batch)[0]

    def logits_and_targets(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(N, C)`` refined logits and ``(N,)`` target columns; C = N, or the items of every
        rank's batch with ``gather_negatives``."""
        scores = self._scores(model, batch)
        return self._refined(scores, 0, len(scores.targets)), scores.targets

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        scores = self._scores(model, batch)
        rows, columns = len(scores.targets), scores.candidates.shape[0]
        # a chunk of rows at a time: the whole (N, C) matrix passes glibc's mmap threshold (32 MB)
        # from N ~ 2,900 (a sequence model's positions), and is then page-faulted in every step
        chunk = max(1, _CHUNK_ELEMENTS // max(1, columns))
        per_row = torch.cat([
            F.cross_entropy(self._refined(scores, start, min(start + chunk, rows)), scores.targets[start:start + chunk], reduction="none")
            for start in range(0, rows, chunk)
        ]) if rows else scores.queries.new_zeros(0)  # fmt: skip  # (N,)
        return _weighted_mean(per_row, _row_weights(scores.labels, per_row.dtype, per_row.device))

    def _scores(self, model: nn.Module, batch: Batch) -> "_Scores":
        """The pairs' queries, the candidate items and what refines their logits."""
        pairs = retrieval_pairs(model, batch)  # N (query, positive) pairs: N = B for two towers
        user_vectors = pairs.queries  # (N, D)
        needs_rows = self.logq_correction or self.remove_accidental_hits or pairs.positive_vectors is None
        why = "log-Q correction and accidental-hit removal"
        item_rows = positive_item_rows(pairs, batch, self.item_feature, user_vectors.device, why=why) if needs_rows else None  # (N,)
        item_vectors = positive_item_vectors(model, pairs, item_rows)  # (N, D)
        candidates, candidate_rows, targets, padded = item_vectors.float(), item_rows, None, None
        if self.gather_negatives and _world_size() > 1:
            candidates, candidate_rows, targets, padded = _gather_items(item_vectors.float(), item_rows)
        if targets is None:
            targets = torch.arange(user_vectors.shape[0], device=user_vectors.device)  # (N,) the diagonal
        log_q = None
        if self.logq_correction:
            if self.item_log_probs is None:
                raise ValueError(
                    "logq_correction needs item frequencies: call task.set_item_frequencies(counts) "
                    "(see count_item_rows), or build the task with logq_correction=False"
                )
            self.item_log_probs = self.item_log_probs.to(user_vectors.device)
            log_q = self.item_log_probs[candidate_rows]  # (C,)
        return _Scores(user_vectors.float(), candidates, item_rows, candidate_rows, targets, log_q, padded, pairs.labels)

    def _refined(self, scores: "_Scores", start: int, stop: int) -> Tensor:
        """``(stop - start, C)``: rows start..stop's cosines, sharpened, corrected and masked."""
        logits = scores.queries[start:stop] @ scores.candidates.T  # (n, C) cosines
        logits = apply_temperature(logits, temperature=self.temperature)
        if scores.log_q is not None:
            logits = apply_logq_correction(logits, item_log_probs=scores.log_q)
        if self.remove_accidental_hits:
            logits = mask_accidental_hits(
                logits, query_item_rows=scores.query_rows[start:stop], candidate_item_rows=scores.candidate_rows,
                target_columns=scores.targets[start:stop],
            )  # fmt: skip
        if scores.padded is not None:  # gathered candidates: the padding of shorter batches
            logits = logits.masked_fill(scores.padded.unsqueeze(0), torch.finfo(logits.dtype).min)
        return logits

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` cosine / temperature of each (query, positive) pair (N = B for two towers)."""
        return scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return (
            f"InBatchSoftmaxTask(temperature={self.temperature}, logq_correction={self.logq_correction}, "
            f"remove_accidental_hits={self.remove_accidental_hits}, item_feature={self.item_feature!r})"
        )
