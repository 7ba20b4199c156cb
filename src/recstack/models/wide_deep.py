"""Wide & Deep (Cheng et al., 2016): a linear model with cross products beside an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.lr import LR
from recstack.models.params import DeepParams, require, select_features
from recstack.models.registry import register_model
from recstack.models.state_keys import accept_old_keys
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.table import Embedding
from recstack.schema import CategoricalFeature

_HASH_MODULUS = 2_147_483_647  # 2**31 - 1, a prime: every intermediate stays inside int64
_HASH_MULTIPLIER = 1_000_003


@register_model("wide_deep")
class WideDeep(nn.Module):
    """``logit = wide(x) + deep(x)``, trained jointly.

    - wide: :class:`LR` over ``wide_features`` plus one weight per hashed cross product
      (``cross_features``: groups of categorical features, e.g. ``[[user_id, item_id]]``;
      the pair of ids picks one of ``cross_buckets`` weights, as the paper's
      ``AND(user_installed_app=netflix, impression_app=pandora)``);
    - deep: pooled embeddings and dense features of ``features`` -> MLP -> Linear.

    Example (``tests/models`` runs it)::

        model = build_model("wide_deep", feature_map, {"cross_features": [["user_id", "item_id"]]})
        logits = model(batch)  # (B,)
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        wide_features: tuple[str, ...] | None = None  # None: every feature of the schema
        cross_features: tuple[tuple[str, ...], ...] = ()  # groups of categorical features
        cross_buckets: int = 100_000  # hashed weights per cross product

        def validate(self) -> None:
            super().validate()
            for i, group in enumerate(self.cross_features):
                require(len(group) >= 2, f"cross_features[{i}]", f"a cross needs two features or more, got {list(group)}")
            require(self.cross_buckets >= 1, "cross_buckets", f"must be >= 1, got {self.cross_buckets}")

        def features_read(self) -> frozenset[str] | None:
            deep = super().features_read()
            if deep is None or self.wide_features is None:
                return None
            return deep | set(self.wide_features) | {name for group in self.cross_features for name in group}

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        wide = select_features(feature_map, p.wide_features, key="wide_features")
        self.deep_inputs = select_features(feature_map, p.features).all
        self.wide = LR(feature_map=feature_map, params=LR.Params(features=wide.all, sparse_embeddings=p.sparse_embeddings))
        self.crosses = nn.ModuleList(
            HashedCross(feature_map, features=group, buckets=p.cross_buckets, sparse=p.sparse_embeddings, key=f"cross_features[{i}]")
            for i, group in enumerate(p.cross_features)
        )
        self.embeddings = build_sparse_inputs(feature_map, features=self.deep_inputs, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        self.deep = p.mlp(self.embeddings.output_dim(self.deep_inputs), head_dim=1)
        accept_old_keys(self, {"deep_score.": "deep.head."})  # runs saved when the model held the head

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        wide_logits = self.wide(batch)  # (B,)
        for cross in self.crosses:
            wide_logits = wide_logits + cross(batch)  # (B,)
        stacked = self.embeddings.concat(batch, self.deep_inputs)  # (B, N)
        deep_logits = self.deep(stacked).squeeze(-1)  # (B,)
        return wide_logits + deep_logits


class HashedCross(nn.Module):
    """One weight per combination of several categorical ids, hashed into ``buckets`` rows.

    The combination's hash is a polynomial in the features' vocabulary rows, reduced modulo
    a prime at every step (no overflow), then modulo ``buckets``; collisions share a weight,
    the usual hashing trick. Weights start at zero.

    Args:
        feature_map: the fitted feature map.
        features: two or more categorical features (not sequences).
        buckets: rows of the weight table.
        sparse: sparse gradients for the weight table.
        key: the config key of this cross, for error messages.
    """

    def __init__(self, feature_map: FeatureMap, *, features: Sequence[str], buckets: int, sparse: bool, key: str):
        super().__init__()
        for name in features:
            require(name in feature_map.schema.names, key, f"unknown feature {name!r}")
            feature = feature_map.schema[name]
            require(isinstance(feature, CategoricalFeature), key, f"{name!r} is {feature.kind}; crosses take categorical features")
        self.features = tuple(features)
        self.buckets = buckets
        self.weights = Embedding(buckets, 1, sparse=sparse)
        nn.init.zeros_(self.weights.weight)

    def bucket(self, batch: Batch) -> torch.Tensor:
        """The bucket of each row's combination, (B,) int64."""
        hashed = torch.zeros_like(batch.ids[self.features[0]])  # (B,)
        for name in self.features:
            hashed = (hashed * _HASH_MULTIPLIER + batch.ids[name]) % _HASH_MODULUS  # (B,)
        return hashed % self.buckets

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns this cross's logit term (B,)."""
        return self.weights(self.bucket(batch)).squeeze(-1)
