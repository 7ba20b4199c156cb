"""What sequential recall models (SASRec, GRU4Rec) share: one item table read as the input
sequence and used as the output layer, a user tower ``history (B, L) -> (B, D)``, and a training
pair at every position.

Shape legend: B batch, L sequence length, D vector dim, N non-padding training positions,
R item table rows.

A training row holds the input sequence ``x_1..x_{m-1}`` (``history_feature``) and the next item
at each position ``x_2..x_m`` (``target_feature``), left-aligned, 0 = padding::

    # history   [x1, x2, x3, 0]        encoder (causal)    outputs  [o1, o2, o3, 0]
    # targets   [x2, x3, x4, 0]   ->   pairs: (o1, x2), (o2, x3), (o3, x4)     N = 3

``retrieval_pairs`` flattens the non-padding positions into N (query, positive row) pairs for
any retrieval task; the user vector served is the output at the last real position
(:func:`recstack.nn.sequence.last_position`), and an item's vector is its row of the same table
(the output layer *is* the input embedding: one parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from recstack.data.batch import OOV_INDEX, Batch
from recstack.data.feature_map import FeatureMap, table_name
from recstack.models.params import ModelParams, param_errors, require
from recstack.models.retrieval_contract import RetrievalDefaults, RetrievalPairs
from recstack.models.youtube_dnn import ItemEmbeddingTower
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.sequence import last_position
from recstack.nn.sparse_inputs import SparseInputs
from recstack.schema import CategoricalFeature, SequenceFeature

__all__ = ["SequenceParams", "SequenceRetrievalModel", "SequenceUserTower"]


@dataclass(frozen=True, kw_only=True)
class SequenceParams(ModelParams):
    """Parameters every sequential recall model has.

    Attributes:
        history_feature: the input sequence (a sequence feature, oldest first).
        target_feature: the next item at each input position (training rows only).
        item_id_feature: the categorical item id (catalogue, index and evaluation targets); the
            three features must name one schema table.
    """

    history_feature: str = "hist_item_ids"
    target_feature: str = "target_item_ids"
    item_id_feature: str = "item_id"


class SequenceUserTower(nn.Module):
    """``history (B, L) int64 -> (B, D)``: the encoder's output at each row's last real position.

    Callable on the plain tensor (``input_names``), so it exports to ONNX on its own.

    Args:
        inputs: the sparse inputs serving ``history_feature`` (the shared item table).
        history_feature: the input sequence's feature name.
        encoder: ``(x (B, L, D), mask (B, L)) -> (B, L, D)``, causal.
    """

    def __init__(self, *, inputs: SparseInputs, history_feature: str, encoder: nn.Module):
        super().__init__()
        self.inputs = inputs
        self.encoder = encoder
        self.features: tuple[str, ...] = (history_feature,)
        self.input_names: tuple[str, ...] = (history_feature,)

    def inputs_from_batch(self, batch: Batch) -> dict[str, Tensor]:
        return {self.input_names[0]: batch.sequences[self.input_names[0]]}

    def encode(self, batch: Batch) -> Tensor:
        """``(B, D)`` user vectors of a batch."""
        return self(batch.sequences[self.input_names[0]])

    def every_position(self, history: Tensor) -> Tensor:
        """``(B, L, D)``: the output at every position (zero at padding)."""
        name = self.input_names[0]
        x = self.inputs.sequence(Batch(sequences={name: history}), name)  # (B, L, D)
        return self.encoder(x, history != 0)  # (B, L, D)

    def forward(self, history: Tensor) -> Tensor:
        """Args: history (B, L) item rows, 0 = padding. Returns (B, D), zeros for an empty one."""
        return last_position(self.every_position(history), history != 0)  # (B, D)


class SequenceRetrievalModel(RetrievalDefaults, nn.Module):
    """Base of the sequential recall models: item table, towers, pairs at every position.

    A subclass sets ``self.inputs = self._item_inputs(...)``, builds its encoder and calls
    :meth:`_build_towers`.
    """

    kind: ClassVar[str] = "retrieval"
    params: SequenceParams

    def _build_towers(self, params: SequenceParams, encoder: nn.Module) -> None:
        """The user tower over ``encoder`` and the item tower, both on ``self.inputs``."""
        self.user_encoder = SequenceUserTower(inputs=self.inputs, history_feature=params.history_feature, encoder=encoder)
        self.item_encoder = ItemEmbeddingTower(inputs=self.inputs, input_name=params.item_id_feature, normalize=False)

    def _item_inputs(self, feature_map: FeatureMap, params: SequenceParams) -> SparseInputs:
        """The one item table, serving the history and the item id (checked to share it)."""
        schema = feature_map.schema
        for key, kind in (("history_feature", SequenceFeature), ("target_feature", SequenceFeature), ("item_id_feature", CategoricalFeature)):
            name = getattr(params, key)
            require(name in schema.names and isinstance(schema[name], kind), key, f"{name!r} is not a {kind.kind} feature of the schema")
        table = table_name(schema[params.item_id_feature])
        for key in ("history_feature", "target_feature"):
            name = getattr(params, key)
            require(table_name(schema[name]) == table, key, f"{name!r} must use the item table {table!r} (schema tables:), not {table_name(schema[name])!r}")
        with param_errors("history_feature"):
            inputs = build_sparse_inputs(feature_map, features=[params.history_feature, params.item_id_feature], sparse=params.sparse_embeddings)
        self.num_item_rows = feature_map.tables[table].num_rows
        return inputs

    # ---- the retrieval contract -------------------------------------------------------------
    @property
    def positive_feature(self) -> str:
        """The next-item sequence: item frequencies are counted over its positions."""
        return self.params.target_feature

    def encode_user(self, batch: Batch) -> Tensor:
        """``(B, D)``: the output at the last real position of the history."""
        return self.user_encoder.encode(batch)

    def encode_item(self, batch: Batch) -> Tensor:
        """``(B, D)``: the batch's items' rows of the item table."""
        return self.item_encoder.encode(batch)

    def encode_item_rows(self, item_rows: Tensor) -> Tensor:
        """``(R,)`` item table rows -> ``(R, D)`` (the output layer)."""
        return self.item_encoder(item_rows)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(user (B, D), item (B, D))`` of each row (serving / scoring a given item)."""
        return self.encode_user(batch), self.encode_item(batch)

    def user_tower(self) -> SequenceUserTower:
        return self.user_encoder

    def item_tower(self) -> ItemEmbeddingTower:
        return self.item_encoder

    def retrieval_pairs(self, batch: Batch) -> RetrievalPairs:
        """A pair at every position with a real input and a known next item (not padding, not
        OOV): ``queries (N, D)``, ``positive_rows (N,)``; ``seen_rows (N, 2L)``: the row's
        inputs and targets (never sampled as that pair's negative)."""
        history = batch.sequences[self.params.history_feature]  # (B, L)
        targets = batch.sequences[self.params.target_feature]  # (B, L)
        if history.shape != targets.shape:
            raise ValueError(
                f"{self.params.history_feature} {tuple(history.shape)} and {self.params.target_feature} "
                f"{tuple(targets.shape)} must be aligned position by position (same maxlen)"
            )
        outputs = self.user_encoder.every_position(history)  # (B, L, D)
        real = (history != 0) & (targets > OOV_INDEX)  # (B, L)
        row_of = torch.arange(history.shape[0], device=history.device).unsqueeze(1).expand_as(history)[real]  # (N,)
        seen = torch.cat([history, targets], dim=1)[row_of]  # (N, 2L)
        return RetrievalPairs(queries=outputs[real], positive_rows=targets[real], positive_vectors=None, labels=None, seen_rows=seen)
