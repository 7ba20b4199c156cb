"""YouTube DNN candidate generation (Covington et al. 2016): watch history in, next item out.

Shape legend: B batch, L history length, D vector dim, N item table rows.

The user tower pools the watch history (the history feature's pooling: mean by default) with
the other user features and runs an MLP; an item's vector is a row of the softmax's output
embedding, looked up by the item's table row::

    hist_item_ids ─pool─┐
    user features ──────┴─ concat ─ MLP ─▶ user (B, D) ─┐
                                                         ├─ user . item (softmax over items)
    item_id ─────── output embedding (N, D) ─▶ item (B, D)┘

Train it with ``recstack.tasks.retrieval``'s in-batch softmax or sampled negatives
(:meth:`encode_item_rows`).

Items never seen as positives. With in-batch negatives an item that is never a positive never
gets a gradient, so it keeps its initial vector; torch-rechub's random init then lets such items
float to the top. Here, by default, vectors are not normalised (a dot product, as in the paper)
and the separate output embedding starts at zero: an unseen item scores exactly 0 for everyone,
below the items a user's history points to. With ``normalize: true`` (cosine, as the DSSM
tasks assume) a zero vector has no direction, so the output embedding starts at N(0, 0.01) and
unseen items get small random cosines instead; with ``share_output_embedding: true`` the output
embedding is the history's input table (N(0, 0.01) init, trained through histories too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap, table_name
from recstack.models.dssm import Tower, tower_features
from recstack.models.params import ModelParams, param_errors, require, require_dims, require_dropout, select_features
from recstack.models.registry import register_model
from recstack.models.retrieval_contract import RetrievalDefaults
from recstack.models.state_keys import accept_old_keys
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.mlp import MLP, Activation
from recstack.nn.sparse_inputs import SparseInputs
from recstack.schema import CategoricalFeature, SequenceFeature, Side

__all__ = ["ItemEmbeddingTower", "YoutubeDNN"]

NORMALIZED_INIT_STD = 0.01


class ItemEmbeddingTower(nn.Module):
    """Item vectors as rows of an embedding: ``forward(item_rows (B,)) -> (B, D)``.

    Args:
        inputs: sparse inputs serving the item id feature: the output embedding ``(N, D)``.
        input_name: the item id feature (the exported graph's input name).
        normalize: L2-normalise the rows.
    """

    def __init__(self, *, inputs: SparseInputs, input_name: str, normalize: bool):
        super().__init__()
        self.inputs = inputs
        self.normalize = normalize
        self.input_names: tuple[str, ...] = (input_name,)
        self.features: tuple[str, ...] = (input_name,)  # the features it reads (the item id)
        # runs saved when this tower held the table itself as ``table``
        (weight_key,) = inputs.state_dict()  # one table: "tables.<name>.weight"
        accept_old_keys(self, {"table.": "inputs." + weight_key.removesuffix("weight")})

    def inputs_from_batch(self, batch: Batch) -> dict[str, Tensor]:
        return {self.input_names[0]: batch.ids[self.input_names[0]]}

    def encode(self, batch: Batch) -> Tensor:
        return self(batch.ids[self.input_names[0]])

    def forward(self, item_rows: Tensor) -> Tensor:
        name = self.input_names[0]
        vectors = self.inputs.pooled(Batch(ids={name: item_rows}), name)  # (B, D): the rows' vectors
        return F.normalize(vectors, dim=-1) if self.normalize else vectors


@register_model("youtube_dnn")
class YoutubeDNN(RetrievalDefaults, nn.Module):
    """``forward(batch) -> (user (B, D), item (B, D))``; the score is their dot product.

    Example:
        >>> model = build_model("youtube_dnn", feature_map, {"hidden_dims": [64, 32]})  # doctest: +SKIP
        >>> users, items = model(batch)  # (B, 32), (B, 32)  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(ModelParams):
        """YouTube DNN parameters.

        Attributes:
            history_feature: the watch-history sequence feature (pooled with its pooling).
            item_id_feature: the categorical feature of the item to predict.
            user_features: the user tower's features; None: every user and context feature
                (which must include the history).
            hidden_dims: the user MLP's widths; the last is D, the output embedding's dim.
            activation: hidden-layer activation (the last layer is linear).
            batch_norm: batch-normalise each MLP layer.
            dropout: dropout after each MLP layer.
            share_output_embedding: item vectors are the history's input table (the same
                table as the item id's); then the last hidden dim must equal its dim.
            normalize: L2-normalise user and item vectors (a cosine score); see the module
                docstring for what this does to unseen items.
        """

        history_feature: str = "hist_item_ids"
        item_id_feature: str = "item_id"
        user_features: tuple[str, ...] | None = None
        hidden_dims: tuple[int, ...] = (256, 128)
        activation: Activation = Activation.RELU
        batch_norm: bool = False
        dropout: float = 0.0
        share_output_embedding: bool = False
        normalize: bool = False

        def validate(self) -> None:
            require_dims("hidden_dims", self.hidden_dims)
            require_dropout("dropout", self.dropout)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        schema = feature_map.schema
        require(
            p.item_id_feature in schema.names and isinstance(schema[p.item_id_feature], CategoricalFeature),
            "item_id_feature",
            f"{p.item_id_feature!r} is not a categorical feature of the schema",
        )
        require(
            p.history_feature in schema.names and isinstance(schema[p.history_feature], SequenceFeature),
            "history_feature",
            f"{p.history_feature!r} is not a sequence feature of the schema",
        )
        names = select_features(feature_map, p.features).all
        user_names = p.user_features if p.user_features is not None else tower_features(feature_map, names, Side.USER)
        user_names = tuple(n for n in user_names if n != p.item_id_feature)
        require(p.history_feature in user_names, "user_features", f"the user tower must read {p.history_feature!r}")
        with param_errors("user_features"):
            user_embeddings = build_sparse_inputs(
                feature_map, features=user_names, sparse=p.sparse_embeddings, init_std=p.embedding_init_std
            )
        mlp = MLP(
            in_dim=user_embeddings.output_dim(user_names),
            hidden_dims=p.hidden_dims,
            activation=p.activation,
            batch_norm=p.batch_norm,
            dropout=p.dropout,
            output_activation=Activation.IDENTITY,
        )
        self.user_encoder = Tower(embeddings=user_embeddings, features=user_names, mlp=mlp, normalize=p.normalize)
        item_table = table_name(schema[p.item_id_feature])
        self.num_item_rows = feature_map.tables[item_table].num_rows
        if p.share_output_embedding:
            require(
                table_name(schema[p.history_feature]) == item_table,
                "share_output_embedding",
                f"{p.history_feature!r} and {p.item_id_feature!r} must name one table to share it",
            )
            dim = user_embeddings.dim(p.history_feature)
            require(
                dim == p.hidden_dims[-1],
                "hidden_dims",
                f"the last width must equal table {item_table!r}'s dim {dim} to share it",
            )
            output = build_sparse_inputs(
                feature_map, features=[p.item_id_feature], sparse=p.sparse_embeddings, share_with=user_embeddings
            )
        else:
            # zero: an item that is never a positive scores 0 (see the module docstring)
            output = build_sparse_inputs(
                feature_map,
                features=[p.item_id_feature],
                sparse=p.sparse_embeddings,
                dim=p.hidden_dims[-1],
                init_std=NORMALIZED_INIT_STD if p.normalize else 0.0,
            )
        self.item_encoder = ItemEmbeddingTower(inputs=output, input_name=p.item_id_feature, normalize=p.normalize)

    def encode_user(self, batch: Batch) -> Tensor:
        """``(B, D)`` user vectors from the history and user features."""
        return self.user_encoder.encode(batch)

    def encode_item(self, batch: Batch) -> Tensor:
        """``(B, D)`` output-embedding rows of the batch's items."""
        return self.item_encoder.encode(batch)

    def encode_item_rows(self, item_rows: Tensor) -> Tensor:
        """``(N,)`` item table rows -> ``(N, D)`` item vectors (sampled negatives, full corpus)."""
        return self.item_encoder(item_rows)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Returns ``(user_vectors (B, D), item_vectors (B, D))``."""
        return self.encode_user(batch), self.encode_item(batch)

    def user_tower(self) -> Tower:
        """The user tower as a standalone module (the training model's own)."""
        return self.user_encoder

    def item_tower(self) -> ItemEmbeddingTower:
        """The item side as a standalone module: ``item_rows (B,) -> (B, D)``."""
        return self.item_encoder
