"""DeepFM (Guo et al., 2017): an FM and a DNN reading the same field embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.lr import LR
from recstack.models.params import DeepParams, param_errors, require, select_features
from recstack.models.registry import register_model
from recstack.models.state_keys import accept_old_keys
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.fm import FactorizationMachine


@register_model("deepfm")
class DeepFM(nn.Module):
    """``logit = linear(x) + FM(fields) + DNN(fields, dense)``.

    The FM component (first-order weights and pairwise interactions) and the deep component
    share one embedding per field, so neither needs feature engineering or pre-training.
    The DNN reads the F field embeddings flattened (F*D) beside the dense features.

    Example (``tests/models`` runs it)::

        model = build_model("deepfm", feature_map, {"hidden_dims": [200, 200, 200]})
        logits = model(batch)  # (B,)
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        hidden_dims: tuple[int, ...] = (200, 200, 200)  # the paper's 200-200-200

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        split = select_features(feature_map, p.features)
        require(len(split.embedded) >= 2, "features", f"DeepFM needs two embedded fields or more, got {list(split.embedded)}")
        self.fields, self.dense_features = split.embedded, split.dense
        self.linear = LR(feature_map=feature_map, params=LR.Params(features=split.all, sparse_embeddings=p.sparse_embeddings))
        self.embeddings = build_sparse_inputs(feature_map, features=split.all, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        with param_errors("features"):
            dim = self.embeddings.field_dim(self.fields)
        self.fm = FactorizationMachine()
        self.dnn = p.mlp(len(self.fields) * dim + self.embeddings.output_dim(self.dense_features), head_dim=1)
        accept_old_keys(self, {"dnn_score.": "dnn.head."})  # runs saved when the model held the head

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        fields = self.embeddings.embed_fields(batch, self.fields)  # (B, F, D)
        fm_logits = self.linear(batch) + self.fm(fields)  # (B,)
        dnn_input = fields.flatten(start_dim=1)  # (B, F*D)
        if self.dense_features:  # no copy of the fields when there is nothing to append
            dense = self.embeddings.dense_input(batch, self.dense_features)  # (B, N)
            dnn_input = torch.cat([dnn_input, dense], dim=-1)  # (B, F*D + N)
        dnn_logits = self.dnn(dnn_input).squeeze(-1)  # (B,)
        return fm_logits + dnn_logits
