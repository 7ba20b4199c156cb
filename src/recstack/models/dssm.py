"""DSSM two-tower retrieval: a user tower and an item tower meeting in a cosine.

Shape legend: B batch, L sequence length, D output vector dim, N catalogue items.

Each tower embeds its own side's features (pooled ids and sequences, plus dense values),
runs an MLP (seed 001: 256-256-128, relu, tanh last) and L2-normalises, so the score
``user . item`` is a cosine; the task scales it (``recstack.tasks.retrieval``)::

    user features ──SparseInputs──MLP──normalise──┐
                                                   ├── cosine / temperature
    item features ──SparseInputs──MLP──normalise──┘

Features go to the user tower when their ``side`` is user or context, to the item tower when it
is item (or as listed in ``user_features`` / ``item_features``). Towers over pretrained vectors
alone (seed 000: 128-d vector features, no id) need no embedding table at all.

Shared tables. ``item_id`` (item side) and ``hist_item_ids`` (user side) name one schema table, so
the user tower's inputs are built ``share_with`` the item tower's and both hold the *same* table:
training updates one matrix, each tower alone computes exactly what the training model computes,
and each exported ONNX tower carries a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap, table_name
from recstack.models.params import DeepParams, param_errors, require, select_features
from recstack.models.registry import register_model
from recstack.models.retrieval_contract import RetrievalDefaults
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.mlp import MLP, Activation
from recstack.nn.sparse_inputs import SparseInputs
from recstack.schema import CategoricalFeature, Pooling, SequenceFeature, Side, is_embedded

__all__ = ["Tower", "TwoTower", "tower_features"]

WEIGHTS_SUFFIX = "__weights"


class Tower(nn.Module):
    """One side of a two-tower model, callable on plain tensors so it exports on its own.

    ``forward`` takes its features' tensors positionally, in the order of ``input_names``:
    ids ``(B,)`` int64 (categorical, bucketised numeric), then sequences ``(B, L)`` int64
    (0 = padding), then the weights ``(B, L)`` of weighted-pooled sequences (named
    ``<feature>__weights``), then dense values ``(B,)`` or ``(B, D)`` float32. Sequences are a
    padded lookup and a masked pool (no ``EmbeddingBag``), which ONNX runs as plain tensor ops.

    Args:
        embeddings: the sparse inputs of this tower's features (shared tables are shared).
        features: the features, in the order their vectors are concatenated.
        mlp: maps the ``(B, embeddings.output_dim(features))`` input to ``(B, D)``; None: none.
        normalize: L2-normalise the output (two-tower cosine); False leaves a raw vector.

    Example:
        >>> vectors = tower(*tower.inputs_from_batch(batch).values())  # doctest: +SKIP
    """

    def __init__(
        self, *, embeddings: SparseInputs, features: Sequence[str], mlp: nn.Module | None, normalize: bool = True
    ):
        super().__init__()
        self.embeddings = embeddings
        self.features = tuple(features)
        self.mlp = mlp
        self.normalize = normalize
        kinds = [embeddings.feature(n) for n in self.features]
        self.id_names = tuple(f.name for f in kinds if is_embedded(f) and not isinstance(f, SequenceFeature))
        self.sequence_names = tuple(f.name for f in kinds if isinstance(f, SequenceFeature))
        weighted = (Pooling.WEIGHTED_SUM, Pooling.WEIGHTED_MEAN)
        self.weighted_names = tuple(f.name for f in kinds if isinstance(f, SequenceFeature) and f.pooling in weighted)
        self.dense_names = tuple(f.name for f in kinds if not is_embedded(f))
        weight_names = tuple(n + WEIGHTS_SUFFIX for n in self.weighted_names)
        self.input_names: tuple[str, ...] = self.id_names + self.sequence_names + weight_names + self.dense_names

    @property
    def input_dim(self) -> int:
        return self.embeddings.output_dim(self.features)

    def inputs_from_batch(self, batch: Batch) -> dict[str, Tensor]:
        """This tower's tensors from a batch, keyed by ``input_names``, in order."""
        inputs = {n: batch.ids[n] for n in self.id_names}
        inputs.update({n: batch.sequences[n] for n in self.sequence_names})
        inputs.update({n + WEIGHTS_SUFFIX: batch.weights[n] for n in self.weighted_names})
        inputs.update({n: batch.dense[n] for n in self.dense_names})
        return inputs

    def encode(self, batch: Batch) -> Tensor:
        """``(B, D)`` vectors of a batch's rows."""
        return self(*self.inputs_from_batch(batch).values())

    def forward(self, *inputs: Tensor) -> Tensor:
        """Args: tensors in ``input_names`` order. Returns ``(B, D)`` (unit rows if normalize)."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the tower takes inputs {list(self.input_names)}, got {len(inputs)} tensors")
        named = dict(zip(self.input_names, inputs))
        batch = Batch(
            ids={n: named[n] for n in self.id_names},
            sequences={n: named[n] for n in self.sequence_names},
            weights={n: named[n + WEIGHTS_SUFFIX] for n in self.weighted_names},
            dense={n: named[n] for n in self.dense_names},
        )
        x = self.embeddings.concat(batch, self.features)  # (B, input_dim)
        if self.mlp is not None:
            x = self.mlp(x)  # (B, D)
        return F.normalize(x, dim=-1) if self.normalize else x  # (B, D)


def tower_features(feature_map: FeatureMap, names: Sequence[str], side: Side) -> tuple[str, ...]:
    """Among ``names``, the item-side features (``side`` item) or the rest (user and context)."""
    sides = {n: feature_map.schema[n].side for n in names}
    if side is Side.ITEM:
        return tuple(n for n in names if sides[n] is Side.ITEM)
    return tuple(n for n in names if sides[n] is not Side.ITEM)


@register_model("dssm")
class TwoTower(RetrievalDefaults, nn.Module):
    """DSSM: user and item towers, ``forward(batch) -> (user (B, D), item (B, D))``, unit rows.

    Train with a task of ``recstack.tasks.retrieval`` (in-batch softmax, pointwise, sampled).

    Example:
        >>> model = build_model("dssm", feature_map, {"hidden_dims": [64, 32]})  # doctest: +SKIP
        >>> users, items = model(batch)  # (B, 32), (B, 32), rows of norm 1  # doctest: +SKIP
        >>> export_tower_onnx(model.user_tower(), model.user_tower().inputs_from_batch(batch), path)  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        """DSSM parameters (``features``: all the model reads, split by side unless listed).

        Attributes:
            user_features: the user tower's features; None: the user and context features.
            item_features: the item tower's features; None: the item-side features.
            hidden_dims: each tower's MLP widths; the last is D (seed 001: 256-256-128).
            activation: hidden-layer activation.
            output_activation: last-layer activation before the L2 norm (seed 001: tanh).
            batch_norm: batch-normalise each MLP layer.
            dropout: dropout after each MLP layer.
            item_id_feature: the categorical feature naming an item's table row; used by
                :meth:`encode_item_rows` for sampled negatives.
        """

        user_features: tuple[str, ...] | None = None
        item_features: tuple[str, ...] | None = None
        hidden_dims: tuple[int, ...] = (256, 256, 128)
        output_activation: Activation = Activation.TANH
        item_id_feature: str = "item_id"

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = params = params or self.Params()
        names = select_features(feature_map, params.features).all
        user_names = params.user_features
        if user_names is None:
            user_names = tower_features(feature_map, names, Side.USER)
        item_names = params.item_features
        if item_names is None:
            item_names = tower_features(feature_map, names, Side.ITEM)
        require(len(user_names) > 0, "user_features", "the user tower has no feature (give features side: user)")
        require(len(item_names) > 0, "item_features", "the item tower has no feature (give features side: item)")
        with param_errors("item_features"):
            item_embeddings = build_sparse_inputs(
                feature_map, features=item_names, sparse=params.sparse_embeddings, init_std=params.embedding_init_std
            )
        with param_errors("user_features"):
            user_embeddings = build_sparse_inputs(
                feature_map, features=user_names, sparse=params.sparse_embeddings, init_std=params.embedding_init_std, share_with=item_embeddings
            )
        user_mlp = self._mlp(user_embeddings.output_dim(user_names))
        item_mlp = self._mlp(item_embeddings.output_dim(item_names))
        self.user_encoder = Tower(embeddings=user_embeddings, features=user_names, mlp=user_mlp)
        self.item_encoder = Tower(embeddings=item_embeddings, features=item_names, mlp=item_mlp)
        self.num_item_rows = _num_rows(feature_map, params.item_id_feature)
        self._catalogue: dict[str, Tensor] | None = None
        self.register_buffer("_catalogue_position", torch.empty(0, dtype=torch.long), persistent=False)

    def _mlp(self, in_dim: int) -> MLP:
        p = self.params
        return MLP(
            in_dim=in_dim,
            hidden_dims=p.hidden_dims,
            activation=p.activation,
            batch_norm=p.batch_norm,
            dropout=p.dropout,
            output_activation=p.output_activation,
        )

    # ---- the two towers ----------------------------------------------------------------------
    def encode_user(self, batch: Batch) -> Tensor:
        """``(B, D)`` unit user vectors."""
        return self.user_encoder.encode(batch)

    def encode_item(self, batch: Batch) -> Tensor:
        """``(B, D)`` unit item vectors."""
        return self.item_encoder.encode(batch)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Returns ``(user_vectors (B, D), item_vectors (B, D))``, rows of norm 1."""
        return self.encode_user(batch), self.encode_item(batch)

    def user_tower(self) -> Tower:
        """The user tower as a standalone module (the training model's own, tables shared)."""
        return self.user_encoder

    def item_tower(self) -> Tower:
        """The item tower as a standalone module (the training model's own, tables shared)."""
        return self.item_encoder

    # ---- item vectors from table rows (sampled negatives) ----------------------------------------
    def set_item_catalogue(self, catalogue: Batch) -> None:
        """Item features of every item, one row per item, for :meth:`encode_item_rows`.

        Needed when the item tower reads more than the item id: the catalogue row of item table
        row r is the one whose ``ids[item_id_feature]`` is r. Items absent from it cannot be
        sampled as negatives.
        """
        rows = catalogue.ids[self.params.item_id_feature].cpu()  # (N,)
        position = torch.full((self._require_rows(),), -1, dtype=torch.long)
        position[rows] = torch.arange(rows.shape[0])
        self._catalogue = {k: v.cpu() for k, v in self.item_encoder.inputs_from_batch(catalogue).items()}
        self._catalogue_position = position.to(self._catalogue_position.device)

    def encode_item_rows(self, item_rows: Tensor) -> Tensor:
        """``(N,)`` item table rows -> ``(N, D)`` unit item vectors.

        An id-only item tower embeds the rows directly; any other item tower reads the rows'
        features from :meth:`set_item_catalogue`.
        """
        if self._catalogue is not None:
            position = self._catalogue_position[item_rows]  # (N,)
            if bool((position < 0).any()):
                raise ValueError("encode_item_rows: some item rows have no row in the item catalogue")
            device = item_rows.device
            inputs = [self._catalogue[n].to(device)[position] for n in self.item_encoder.input_names]
            return self.item_encoder(*inputs)
        if self.item_encoder.input_names != (self.params.item_id_feature,):
            raise ValueError(
                f"encode_item_rows: the item tower reads {list(self.item_encoder.input_names)}, not the item id "
                "alone; call model.set_item_catalogue(batch_of_every_item) first"
            )
        return self.item_encoder(item_rows)

    def _require_rows(self) -> int:
        if self.num_item_rows is None:
            name = self.params.item_id_feature
            raise ValueError(f"item_id_feature {name!r} is not a categorical feature of the schema")
        return self.num_item_rows


def _num_rows(feature_map: FeatureMap, name: str) -> int | None:
    """Rows of the table of categorical feature ``name`` (None when there is no such feature)."""
    if name not in feature_map.schema.names or not isinstance(feature_map.schema[name], CategoricalFeature):
        return None
    return feature_map.tables[table_name(feature_map.schema[name])].num_rows
