"""Sampled softmax: each row's positive against K item rows drawn from the whole catalogue.

Shape legend: B batch, D vector dim, K sampled negatives per row, U distinct sampled rows,
N item rows (vocabulary).

As in the in-batch softmax, a batch label weights each row's loss term (rows labelled 0 are
dropped).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch, OOV_INDEX
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.models.retrieval_contract import ItemCatalogueModel
from recstack.tasks.retrieval_steps import (
    _row_weights,
    _weighted_mean,
    apply_temperature,
    positive_item_rows,
    positive_item_vectors,
    retrieval_pairs,
    scaled_cosine_of_pairs,
)

__all__ = ["ItemCatalogueModel", "NegativeDistribution", "NegativeSamplingTask"]


class NegativeDistribution(str, enum.Enum):
    """How :class:`NegativeSamplingTask` draws negative item rows."""

    UNIFORM = "uniform"  # every real item row equally
    POPULARITY = "popularity"  # ~ count ** 0.75, as word2vec


# Rows below this are padding (0) and out-of-vocabulary (1): never real items to sample.
FIRST_ITEM_ROW = OOV_INDEX + 1


@register_task("negative_sampling")
class NegativeSamplingTask(RegisteredTask, SingleHeadTask):
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

    family: ClassVar[TaskType] = TaskType.RETRIEVAL

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: negative_sampling, num_negatives: 20, ...}``;
        ``item_feature`` None: the model's item-id feature (resolved when a run trains)."""

        num_negatives: int = 20
        distribution: NegativeDistribution = NegativeDistribution.UNIFORM
        temperature: float = 0.05
        item_feature: str | None = None
        seed: int | None = None

        def validate(self) -> None:
            require(self.num_negatives >= 1, "num_negatives", f"must be >= 1, got {self.num_negatives}")
            require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")

    @classmethod
    def from_params(cls, params: "NegativeSamplingTask.Params") -> "NegativeSamplingTask":
        return cls(
            num_negatives=params.num_negatives,
            distribution=params.distribution,
            temperature=params.temperature,
            item_feature=params.item_feature or "item_id",
            seed=params.seed,
        )

    def __init__(
        self,
        *,
        num_negatives: int = 20,
        distribution: NegativeDistribution | str = NegativeDistribution.UNIFORM,
        temperature: float = 0.05,
        item_feature: str = "item_id",
        seed: int | None = None,
    ) -> None:
        self.params = self.Params(
            num_negatives=num_negatives, distribution=distribution, temperature=temperature, item_feature=item_feature, seed=seed
        )  # checked: ConfigError (a ValueError) naming the parameter
        self.num_negatives = num_negatives
        self.distribution = NegativeDistribution(distribution)  # ValueError on an unknown name
        self.temperature = self.params.temperature
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
        if not isinstance(model, ItemCatalogueModel) or model.num_item_rows is None:
            raise ValueError(
                f"NegativeSamplingTask needs a model with num_item_rows and encode_item_rows (an "
                f"ItemCatalogueModel, as every RetrievalModel is), got {type(model).__name__}"
            )
        pairs = retrieval_pairs(model, batch)  # N (query, positive) pairs: N = B for two towers
        user_vectors = pairs.queries.float()  # (N, D)
        N, device = user_vectors.shape[0], user_vectors.device
        needs_rows = pairs.positive_vectors is None
        positive_rows = positive_item_rows(pairs, batch, self.item_feature, device, why="negative sampling") if needs_rows else None
        item_vectors = positive_item_vectors(model, pairs, positive_rows).float()  # (N, D)
        negative_rows = self.sample(N, model.num_item_rows).to(device)  # (N, K)
        # encode each distinct sampled row once: N*K rows hold many repeats
        unique_rows, inverse = torch.unique(negative_rows, return_inverse=True)  # (U,), (N, K)
        negative_vectors = model.encode_item_rows(unique_rows).float()[inverse]  # (N, K, D)

        positive = (user_vectors * item_vectors).sum(-1, keepdim=True)  # (N, 1)
        # multiply and sum, not einsum (N tiny (1, D) x (D, K) matmuls): 2-3x faster on CPU
        negative = (user_vectors.unsqueeze(1) * negative_vectors).sum(-1)  # (N, K)
        logits = torch.cat([positive, negative], dim=1)  # (N, 1+K) cosines, the positive first
        logits = apply_temperature(logits, temperature=self.temperature)
        if positive_rows is None:
            positive_rows = positive_item_rows(pairs, batch, self.item_feature, device, why="negative sampling")  # (N,)
        hits = negative_rows == positive_rows.unsqueeze(1)  # (N, K) accidental hits
        hits = torch.cat([torch.zeros_like(hits[:, :1]), hits], dim=1)  # (N, 1+K): never the positive
        logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
        targets = torch.zeros(N, dtype=torch.long, device=device)  # the positive is column 0
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (N,)
        return _weighted_mean(per_row, _row_weights(pairs.labels, per_row.dtype, device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` cosine / temperature of each (query, positive) pair (N = B for two towers)."""
        return scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return (
            f"NegativeSamplingTask(num_negatives={self.num_negatives}, distribution={self.distribution.value!r}, "
            f"temperature={self.temperature})"
        )
