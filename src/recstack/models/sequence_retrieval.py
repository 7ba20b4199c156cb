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
from recstack.schema import CategoricalFeature, SequenceFeature, Side

__all__ = ["ItemAttributes", "SequenceParams", "SequenceRetrievalModel", "SequenceUserTower"]


@dataclass(frozen=True, kw_only=True)
class SequenceParams(ModelParams):
    """Parameters every sequential recall model has.

    Attributes:
        history_feature: the input sequence (a sequence feature, oldest first).
        target_feature: the next item at each input position (training rows only).
        item_id_feature: the categorical item id (catalogue, index and evaluation targets); the
            three features must name one schema table.
        item_side_features: categorical item-side features (an item's genre) added to every
            position's input: each history item's attributes, looked up in a table of every
            item's values built from the catalogue (``set_item_catalogue``) and saved with the
            model, so serving needs nothing but the item ids (:class:`ItemAttributes`).
    """

    history_feature: str = "hist_item_ids"
    target_feature: str = "target_item_ids"
    item_id_feature: str = "item_id"
    item_side_features: tuple[str, ...] = ()


class ItemAttributes(nn.Module):
    """Per-position side features from the item ids: ``item rows (B, L) -> (B, L, D)``.

    ``rows`` (R, S) holds, for item table row r, the table row of each of its S side features
    (0 for padding, the OOV row for an item the catalogue lacks); it is a saved buffer, filled
    by :meth:`set_from_catalogue`. The S attribute vectors are concatenated and projected to D,
    then added to the item embedding (a Linear, bias-free: padding stays zero).

    Args:
        inputs: sparse inputs of the side features (their own tables).
        features: the side features' names.
        num_item_rows: R.
        dim: D.
    """

    def __init__(self, *, inputs: SparseInputs, features: tuple[str, ...], num_item_rows: int, dim: int):
        super().__init__()
        self.inputs = inputs
        self.features = features
        rows = torch.full((num_item_rows, len(features)), OOV_INDEX, dtype=torch.long)
        rows[0] = 0  # padding
        self.register_buffer("rows", rows)  # (R, S), saved with the model
        self.project = nn.Linear(inputs.output_dim(features), dim, bias=False)

    def set_from_catalogue(self, item_rows: Tensor, attributes: dict[str, Tensor]) -> None:
        """``item_rows (N,)`` and each side feature's rows ``(N,)`` of the same N catalogue items."""
        item_rows = item_rows.to(self.rows.device)
        for s, name in enumerate(self.features):
            self.rows[item_rows, s] = attributes[name].to(self.rows.device)

    def forward(self, history: Tensor) -> Tensor:
        """Args: history (B, L) item rows. Returns (B, L, D), zero at padding."""
        side = self.rows[history]  # (B, L, S)
        flat = {name: side[..., s].reshape(-1) for s, name in enumerate(self.features)}  # (B * L,) each
        vectors = self.inputs.concat(Batch(ids=flat), self.features)  # (B * L, sum of dims)
        return self.project(vectors).view(*history.shape, -1) * (history != 0).unsqueeze(-1).to(vectors.dtype)


class SequenceUserTower(nn.Module):
    """``history (B, L) int64 -> (B, D)``: the encoder's output at each row's last real position.

    Callable on the plain tensor (``input_names``), so it exports to ONNX on its own.

    Args:
        inputs: the sparse inputs serving ``history_feature`` (the shared item table).
        history_feature: the input sequence's feature name.
        encoder: ``(x (B, L, D), mask (B, L)) -> (B, L, D)``, causal; optionally with
            ``encode_packed(x[mask] (P, D), mask) -> (P, D)``, the outputs at the real
            positions from the inputs at those positions only.
        attributes: per-position side features added to the item embeddings; None: none.
    """

    def __init__(self, *, inputs: SparseInputs, history_feature: str, encoder: nn.Module, attributes: ItemAttributes | None = None):
        super().__init__()
        self.inputs = inputs
        self.encoder = encoder
        self.attributes = attributes
        self.features: tuple[str, ...] = (history_feature,)
        self.input_names: tuple[str, ...] = (history_feature,)

    def inputs_from_batch(self, batch: Batch) -> dict[str, Tensor]:
        return {self.input_names[0]: batch.sequences[self.input_names[0]]}

    def encode(self, batch: Batch) -> Tensor:
        """``(B, D)`` user vectors of a batch."""
        return self(batch.sequences[self.input_names[0]])

    def every_position(self, history: Tensor) -> Tensor:
        """``(B, L, D)``: the output at every position (zero at padding)."""
        return self.encoder(self._embed(history), history != 0)  # (B, L, D)

    def real_positions(self, history: Tensor) -> Tensor:
        """``(P, D)``: the output at each real position, row-major (``every_position(h)[h != 0]``).
        Through the encoder's ``encode_packed`` when it has one: only the P real items are
        looked up and encoded."""
        mask = history != 0  # (B, L)
        encode_packed = getattr(self.encoder, "encode_packed", None)
        if encode_packed is None:
            return self.encoder(self._embed(history), mask)[mask]  # (P, D)
        name = self.input_names[0]
        flat = mask.reshape(-1).nonzero().squeeze(1)  # (P,) real positions of the flattened (B * L)
        rows = self.inputs.sequence(Batch(sequences={name: history}), name, flat=flat)  # (P, D)
        if self.attributes is not None:
            rows = rows + self.attributes(history.reshape(-1).index_select(0, flat))  # (P, D)
        return encode_packed(rows, mask)  # (P, D)

    def _embed(self, history: Tensor) -> Tensor:
        """(B, L) item rows -> (B, L, D) inputs: the item embeddings, plus side features."""
        name = self.input_names[0]
        x = self.inputs.sequence(Batch(sequences={name: history}), name)  # (B, L, D)
        if self.attributes is not None:
            x = x + self.attributes(history)  # (B, L, D): the items' genres etc.
        return x

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
        self.user_encoder = SequenceUserTower(
            inputs=self.inputs, history_feature=params.history_feature, encoder=encoder, attributes=self.attributes
        )
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
            inputs = build_sparse_inputs(
                feature_map, features=[params.history_feature, params.item_id_feature], sparse=params.sparse_embeddings,
                init_std=params.embedding_init_std,
            )  # fmt: skip
        self.num_item_rows = feature_map.tables[table].num_rows
        self.attributes = self._item_attributes(feature_map, params, inputs.dim(params.history_feature))
        return inputs

    def _item_attributes(self, feature_map: FeatureMap, params: SequenceParams, dim: int) -> ItemAttributes | None:
        """The side features' lookup (None without ``item_side_features``)."""
        if not params.item_side_features:
            return None
        schema = feature_map.schema
        for name in params.item_side_features:
            require(
                name in schema.names and isinstance(schema[name], CategoricalFeature) and schema[name].side is Side.ITEM,
                "item_side_features", f"{name!r} is not a categorical item-side feature of the schema",
            )  # fmt: skip
            require(name != params.item_id_feature, "item_side_features", f"{name!r} is the item id itself")
        with param_errors("item_side_features"):
            inputs = build_sparse_inputs(
                feature_map, features=list(params.item_side_features), sparse=params.sparse_embeddings, init_std=params.embedding_init_std
            )
        assert self.num_item_rows is not None
        return ItemAttributes(inputs=inputs, features=tuple(params.item_side_features), num_item_rows=self.num_item_rows, dim=dim)

    # ---- the retrieval contract -------------------------------------------------------------
    @property
    def positive_feature(self) -> str:
        """The next-item sequence: item frequencies are counted over its positions."""
        return self.params.target_feature

    @property
    def reads_item_catalogue(self) -> bool:
        """With item side features: their per-item values come from the catalogue."""
        return self.attributes is not None

    @property
    def item_catalogue_features(self) -> tuple[str, ...]:
        return (self.params.item_id_feature, *self.params.item_side_features)

    def set_item_catalogue(self, catalogue: Batch) -> None:
        """Every item's side-feature rows, from a batch of catalogue rows (``item_id`` and the
        side features; items it lacks keep the OOV row). Saved with the model."""
        if self.attributes is None:
            return
        rows = catalogue.ids[self.params.item_id_feature]  # (N,)
        self.attributes.set_from_catalogue(rows, {name: catalogue.ids[name] for name in self.params.item_side_features})

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
        OOV): ``queries (N, D)``, ``positive_rows (N,)``; ``seen_rows (B, 2L)``: each row's
        inputs and targets (never sampled as its pairs' negatives), ``seen_of_pair (N,)`` the row."""
        history = batch.sequences[self.params.history_feature]  # (B, L)
        targets = batch.sequences[self.params.target_feature]  # (B, L)
        if history.shape != targets.shape:
            raise ValueError(
                f"{self.params.history_feature} {tuple(history.shape)} and {self.params.target_feature} "
                f"{tuple(targets.shape)} must be aligned position by position (same maxlen)"
            )
        # left-aligned: columns past the batch's longest row are padding in every row, and no
        # real position reads them; dropping them changes no output (batches of short sessions
        # under a long maxlen then encode only what they hold)
        present = history != 0  # (B, L)
        longest = int(present.sum(dim=1).max()) if present.numel() else 0
        if 0 < longest < history.shape[1]:
            history, targets, present = history[:, :longest], targets[:, :longest], present[:, :longest]  # (B, L') each
        outputs = self.user_encoder.real_positions(history)  # (P, D), P = present.sum()
        real = present & (targets > OOV_INDEX)  # (B, L)
        row_of = torch.arange(history.shape[0], device=history.device).unsqueeze(1).expand_as(history)[real]  # (N,)
        seen = torch.cat([history, targets], dim=1)  # (B, 2L), each pair reads its row
        paired = real[present]  # (P,) which real positions have a known next item
        queries = outputs if bool(paired.all()) else outputs[paired]  # (N, D)
        return RetrievalPairs(queries=queries, positive_rows=targets[real], positive_vectors=None, labels=None, seen_rows=seen, seen_of_pair=row_of)
