"""Factorization Machine (Rendle, 2010): linear terms plus every pairwise interaction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.lr import LR
from recstack.models.params import ModelParams, param_errors, require, select_features
from recstack.models.registry import register_model
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.fm import FactorizationMachine


@register_model("fm")
class FM(nn.Module):
    """``logit = LR(x) + sum_{i<j} <v_i, v_j>`` over the embedded fields.

    Every embedded feature (a sequence pooled with its pooling) is one field with a D-dim
    factor vector; dense features enter the linear part only. Fields need one D.

    Example (``tests/models`` runs it)::

        model = build_model("fm", feature_map, {})
        logits = model(batch)  # (B,)
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(ModelParams):
        pass

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = params or self.Params()
        split = select_features(feature_map, self.params.features)
        require(len(split.embedded) >= 2, "features", f"FM needs two embedded fields or more, got {list(split.embedded)}")
        self.fields = split.embedded
        self.linear = LR(feature_map=feature_map, params=LR.Params(features=split.all, sparse_embeddings=self.params.sparse_embeddings))
        p = self.params
        self.embeddings = build_sparse_inputs(feature_map, features=self.fields, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        with param_errors("features"):
            self.embeddings.field_dim(self.fields)
        self.interaction = FactorizationMachine()

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        fields = self.embeddings.embed_fields(batch, self.fields)  # (B, F, D)
        return self.linear(batch) + self.interaction(fields)  # (B,)
