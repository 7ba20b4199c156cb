"""Deep & Cross Network (Wang et al., 2017), seed 002: a cross network beside a DNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import DeepParams, require, select_features
from recstack.models.registry import register_model
from recstack.nn.cross import CrossNetwork
from recstack.nn.embedding import build_sparse_inputs


@register_model("dcn")
class DCN(nn.Module):
    """``x0 = [embeddings, dense]``; ``logit = w . [cross(x0), deep(x0)] + b``.

    The cross network (``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l``) and the DNN both read x0;
    their outputs are concatenated and a single Linear gives the logit (the paper's
    combination layer, without its sigmoid).

    Example (``tests/models`` runs it)::

        model = build_model("dcn", feature_map, {"num_cross_layers": 3})
        logits = model(batch)  # (B,)
    """

    head_module: ClassVar[str] = "score"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        num_cross_layers: int = 3

        def validate(self) -> None:
            super().validate()
            require(self.num_cross_layers >= 1, "num_cross_layers", f"must be >= 1, got {self.num_cross_layers}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = select_features(feature_map, p.features).all
        self.embeddings = build_sparse_inputs(feature_map, features=self.inputs, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        width = self.embeddings.output_dim(self.inputs)
        self.cross = CrossNetwork(in_dim=width, num_layers=p.num_cross_layers)
        self.deep = p.mlp(width)
        self.head_input_dim = width + self.deep.out_dim
        self.score = nn.Linear(self.head_input_dim, 1)

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the output layer reads: the cross and deep networks' outputs, ``(B, N + H)``."""
        x0 = self.embeddings.concat(batch, self.inputs)  # (B, N)
        return torch.cat([self.cross(x0), self.deep(x0)], dim=-1)  # (B, N + H)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.score(self.head_input(batch)).squeeze(-1)  # (B,)
