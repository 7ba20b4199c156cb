"""Logistic regression over one-hot ids and dense features: the linear part of FM, DeepFM
and Wide&Deep."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import ModelParams, select_features
from recstack.models.registry import register_model
from recstack.nn.embedding import build_sparse_inputs


@register_model("lr")
class LR(nn.Module):
    """``logit = b + sum_f w_f[id_f] + w_dense . x_dense``.

    A weight per id is a 1-d embedding (the dot product of a weight vector with a one-hot
    vector, without building the one-hot); features sharing a table share their weights. A
    sequence contributes its ids' weights pooled with its feature's pooling (a multi-hot
    input, mean-normalised by default). Pretrained tables do not carry over: the weights
    are fresh, trainable and start at zero, so an untrained LR predicts 0.5 everywhere.

    Example (``tests/models`` runs it)::

        model = build_model("lr", feature_map, {})
        logits = model(batch)  # (B,)
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(ModelParams):
        embedding_init_std: float = 0.0  # the per-id weights start at zero

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = params or self.Params()
        split = select_features(feature_map, self.params.features)
        self.sparse_features, self.dense_features = split.embedded, split.dense
        self.weights = build_sparse_inputs(
            feature_map, features=split.all, sparse=self.params.sparse_embeddings, dim=1, init_std=self.params.embedding_init_std
        )
        dense_width = self.weights.output_dim(self.dense_features)
        self.dense_linear = nn.Linear(dense_width, 1, bias=False) if dense_width else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        logits = self.bias + self.weights.concat(batch, self.sparse_features).sum(dim=-1)  # (B,)
        if self.dense_linear is not None:
            dense = self.weights.dense_input(batch, self.dense_features)  # (B, N)
            logits = logits + self.dense_linear(dense).squeeze(-1)  # (B,)
        return logits
