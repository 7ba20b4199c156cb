"""Sampled softmax with log-Q correction: each pair's positive against K items sampled once per
batch from the catalogue.

Shape legend: N pairs, D vector dim, K sampled negatives (shared by the batch), R item rows.

The sampled softmax (Jean et al. 2015; Bengio & Senécal 2008) estimates the full softmax from K
candidates drawn with probability Q(j). Without correction, items drawn often (popular ones,
under ``popularity`` sampling) are pushed down too hard; the correction subtracts ``log Q(j)``
from every candidate's logit, the positive's included (TensorFlow's ``subtract_log_q``)::

    logits = [q . e_pos, q . e_neg_1 .. q . e_neg_K] / temperature    # (N, 1 + K)
    logits -= log Q([pos, neg_1 .. neg_K])                            # log-Q correction
    logits[neg_k == pos] = -inf                                       # accidental hits
    loss = cross-entropy with target column 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.full_softmax import catalogue_model
from recstack.tasks.negative_sampling import FIRST_ITEM_ROW, NegativeDistribution
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.tasks.retrieval_steps import (
    _row_weights,
    _weighted_mean,
    apply_temperature,
    positive_item_rows,
    positive_item_vectors,
    retrieval_pairs,
    scaled_cosine_of_pairs,
)

__all__ = ["SampledSoftmaxTask"]


@register_task("sampled_softmax")
class SampledSoftmaxTask(RegisteredTask, SingleHeadTask):
    """Softmax over ``[positive, K negatives shared by the batch]`` with log-Q correction.

    Args:
        num_negatives: K, drawn once per batch (with replacement).
        distribution: ``uniform`` over real item rows, or ``popularity`` (the training
            positives' frequencies, :meth:`set_item_frequencies`).
        logq_correction: subtract ``log Q`` of each candidate (a constant under uniform sampling).
        temperature: logits = score / temperature.
        item_feature: the batch's item column for models whose pairs carry no rows.
        seed: the sampler's seed.
    """

    family: ClassVar[TaskType] = TaskType.RETRIEVAL

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: sampled_softmax, num_negatives: 256, distribution: popularity}``."""

        num_negatives: int = 256
        distribution: NegativeDistribution = NegativeDistribution.POPULARITY
        logq_correction: bool = True
        temperature: float = 1.0
        item_feature: str | None = None
        seed: int | None = None

        def validate(self) -> None:
            require(self.num_negatives >= 1, "num_negatives", f"must be >= 1, got {self.num_negatives}")
            require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")

    @classmethod
    def from_params(cls, params: "SampledSoftmaxTask.Params") -> "SampledSoftmaxTask":
        return cls(
            num_negatives=params.num_negatives, distribution=params.distribution, logq_correction=params.logq_correction,
            temperature=params.temperature, item_feature=params.item_feature or "item_id", seed=params.seed,
        )  # fmt: skip

    def __init__(
        self, *, num_negatives: int = 256, distribution: NegativeDistribution | str = NegativeDistribution.POPULARITY,
        logq_correction: bool = True, temperature: float = 1.0, item_feature: str = "item_id", seed: int | None = None,
    ) -> None:  # fmt: skip
        self.params = self.Params(
            num_negatives=num_negatives, distribution=distribution, logq_correction=logq_correction,
            temperature=temperature, item_feature=item_feature, seed=seed,
        )  # fmt: skip
        self.num_negatives = num_negatives
        self.distribution = self.params.distribution
        self.logq_correction = logq_correction
        self.temperature = self.params.temperature
        self.item_feature = item_feature
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.item_probs: Tensor | None = None  # (R,) sampling probability by item row

    @property
    def needs_item_frequencies(self) -> bool:
        return self.distribution is NegativeDistribution.POPULARITY

    def set_item_frequencies(self, counts: Tensor) -> "SampledSoftmaxTask":
        """``(R,)`` occurrences of each item row among the training positives (popularity)."""
        weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0.0)
        weights[:FIRST_ITEM_ROW] = 0.0
        if not weights.sum() > 0:
            raise ValueError("item counts are all zero")
        self.item_probs = weights / weights.sum()
        return self

    def sampling_probs(self, num_item_rows: int) -> Tensor:
        """``(R,)`` float64 Q(j): 0 for padding / OOV."""
        if self.distribution is NegativeDistribution.UNIFORM:
            probs = torch.zeros(num_item_rows, dtype=torch.float64)
            probs[FIRST_ITEM_ROW:] = 1.0 / (num_item_rows - FIRST_ITEM_ROW)
            return probs
        if self.item_probs is None:
            raise ValueError("distribution='popularity' needs task.set_item_frequencies(counts) (the training workflow sets them)")
        if len(self.item_probs) != num_item_rows:
            raise ValueError(f"item frequencies cover {len(self.item_probs)} rows, the model's item table {num_item_rows}")
        return self.item_probs

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        catalogue = catalogue_model(model, "sampled_softmax")
        pairs = retrieval_pairs(model, batch)
        queries = pairs.queries.float()  # (N, D)
        device = queries.device
        rows = positive_item_rows(pairs, batch, self.item_feature, device, why="sampled softmax")  # (N,)
        positives = positive_item_vectors(model, pairs, rows).float()  # (N, D)
        probs = self.sampling_probs(catalogue.num_item_rows)  # (R,)
        negative_rows = torch.multinomial(probs, self.num_negatives, replacement=True, generator=self.generator).to(device)  # (K,)
        negatives = catalogue.encode_item_rows(negative_rows).float()  # (K, D)
        logits = torch.cat([(queries * positives).sum(-1, keepdim=True), queries @ negatives.T], dim=1)  # (N, 1 + K)
        logits = apply_temperature(logits, temperature=self.temperature)
        if self.logq_correction:
            log_q = torch.log(probs.clamp(min=1e-30)).float().to(device)  # (R,)
            candidate_rows = torch.cat([rows.unsqueeze(1), negative_rows.expand(len(rows), -1)], dim=1)  # (N, 1 + K)
            logits = logits - log_q[candidate_rows]
        hits = negative_rows.unsqueeze(0) == rows.unsqueeze(1)  # (N, K) a negative equal to the positive
        hits = torch.cat([torch.zeros_like(hits[:, :1]), hits], dim=1)  # (N, 1 + K): never the positive
        logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
        targets = torch.zeros(len(rows), dtype=torch.long, device=device)
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (N,)
        return _weighted_mean(per_row, _row_weights(pairs.labels, per_row.dtype, device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` score / temperature of each (query, positive) pair."""
        return scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return (
            f"SampledSoftmaxTask(num_negatives={self.num_negatives}, distribution={self.distribution.value!r}, "
            f"logq_correction={self.logq_correction}, temperature={self.temperature})"
        )
