"""Full softmax: each (query, positive) pair against every item of the catalogue.

Shape legend: N pairs, D vector dim, R item table rows.

The cross-entropy of the positive among all R item rows (padding and OOV rows never
candidates): what SASRec / GRU4Rec train best with (Klenitskiy & Vasilev 2023; Hidasi & Czapp
2023) when R is small enough for an ``(N, R)`` logit matrix per step; use ``sampled_softmax``
beyond that. Needs item vectors from table rows alone (``encode_item_rows``): sequence models
and YouTube DNN; a DSSM tower over item features needs ``set_item_catalogue``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import OOV_INDEX, Batch
from recstack.models.params import require
from recstack.models.retrieval_contract import ItemCatalogueModel
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.tasks.retrieval_steps import (
    _row_weights,
    _weighted_mean,
    positive_item_rows,
    retrieval_pairs,
    scaled_cosine_of_pairs,
)

__all__ = ["FullSoftmaxTask", "catalogue_model"]

_CHUNK_ELEMENTS = 1 << 20  # logits per chunk: 4 MiB in float32, cache-sized and heap-allocated


def catalogue_model(model: nn.Module, task: str) -> ItemCatalogueModel:
    """``model`` as an :class:`ItemCatalogueModel` with a known table size, else a ValueError."""
    if not isinstance(model, ItemCatalogueModel) or model.num_item_rows is None:
        raise ValueError(f"{task} needs a model with num_item_rows and encode_item_rows (every RetrievalModel), got {type(model).__name__}")
    return model


@register_task("full_softmax")
class FullSoftmaxTask(RegisteredTask, SingleHeadTask):
    """Cross-entropy of each pair's positive over every item row.

    Args:
        temperature: logits = score / temperature (1.0 for unnormalised dot products).
        item_feature: the batch's item column for models whose pairs carry no rows (two towers).
    """

    family: ClassVar[TaskType] = TaskType.RETRIEVAL
    needs_item_frequencies = False

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: full_softmax, temperature: 1.0}``."""

        temperature: float = 1.0
        item_feature: str | None = None

        def validate(self) -> None:
            require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")

    @classmethod
    def from_params(cls, params: "FullSoftmaxTask.Params") -> "FullSoftmaxTask":
        return cls(temperature=params.temperature, item_feature=params.item_feature or "item_id")

    def __init__(self, *, temperature: float = 1.0, item_feature: str = "item_id") -> None:
        self.params = self.Params(temperature=temperature, item_feature=item_feature)
        self.temperature = self.params.temperature
        self.item_feature = item_feature

    def set_item_frequencies(self, counts: Tensor) -> "FullSoftmaxTask":
        """Not used: every item is a candidate."""
        return self

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        catalogue = catalogue_model(model, "full_softmax")
        pairs = retrieval_pairs(model, batch)
        queries = pairs.queries.float()  # (N, D)
        targets = positive_item_rows(pairs, batch, self.item_feature, queries.device, why="full softmax targets")  # (N,)
        rows = torch.arange(catalogue.num_item_rows, device=queries.device)  # (R,)
        items = catalogue.encode_item_rows(rows).float()  # (R, D): the output layer
        bias = torch.zeros(len(rows), dtype=queries.dtype, device=queries.device)  # (R,)
        bias[: OOV_INDEX + 1] = torch.finfo(bias.dtype).min  # padding and OOV are no items
        # (n, R) logits a chunk of pairs at a time: one (N, R) matrix is above glibc's 32 MB mmap
        # threshold at SASRec's N ~ 5,000 and R ~ 1,700, so it and its gradient were page-faulted
        # in anew every step (2.3x this loss's time, benchmarks in docs/benchmarks.md)
        chunk = max(1, _CHUNK_ELEMENTS // len(rows))
        per_row = torch.cat([
            F.cross_entropy(torch.addmm(bias, part, items.T, alpha=1.0 / self.temperature), part_targets, reduction="none")
            for part, part_targets in zip(queries.split(chunk), targets.split(chunk))
        ])  # (N,)  # fmt: skip
        return _weighted_mean(per_row, _row_weights(pairs.labels, per_row.dtype, per_row.device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` score / temperature of each (query, positive) pair."""
        return scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return f"FullSoftmaxTask(temperature={self.temperature})"
