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
    apply_temperature,
    positive_item_rows,
    retrieval_pairs,
    scaled_cosine_of_pairs,
)

__all__ = ["FullSoftmaxTask", "catalogue_model"]


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

    def logits_and_targets(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(N, R)`` logits over every item row, ``(N,)`` target rows and the pairs' labels."""
        catalogue = catalogue_model(model, "full_softmax")
        pairs = retrieval_pairs(model, batch)
        queries = pairs.queries.float()  # (N, D)
        targets = positive_item_rows(pairs, batch, self.item_feature, queries.device, why="full softmax targets")  # (N,)
        rows = torch.arange(catalogue.num_item_rows, device=queries.device)  # (R,)
        items = catalogue.encode_item_rows(rows).float()  # (R, D): the output layer
        logits = apply_temperature(queries @ items.T, temperature=self.temperature)  # (N, R)
        logits[:, : OOV_INDEX + 1] = torch.finfo(logits.dtype).min  # padding and OOV are no items
        return logits, targets, pairs.labels

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits, targets, labels = self.logits_and_targets(model, batch)
        per_row = F.cross_entropy(logits, targets, reduction="none")  # (N,)
        return _weighted_mean(per_row, _row_weights(labels, per_row.dtype, per_row.device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` score / temperature of each (query, positive) pair."""
        return scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0 / self.temperature)

    def __repr__(self) -> str:
        return f"FullSoftmaxTask(temperature={self.temperature})"
