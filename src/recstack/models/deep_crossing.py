"""Deep Crossing (Shan et al., 2016): embeddings stacked, then a stack of residual units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import ModelParams, require_dims, select_features
from recstack.models.registry import register_model
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.residual import ResidualUnit


@register_model("deep_crossing")
class DeepCrossing(nn.Module):
    """Embedding -> stacking -> residual units -> scoring.

    The stacked vector (pooled embeddings and dense features, width N) goes through one
    :class:`ResidualUnit` per entry of ``residual_hidden_dims`` (each keeps width N; the entry
    is its inner width), then a Linear to one logit.

    Example (``tests/models`` runs it)::

        model = build_model("deep_crossing", feature_map, {"residual_hidden_dims": [256, 128]})
        logits = model(batch)  # (B,)
    """

    head_module: ClassVar[str] = "score"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(ModelParams):
        # inner widths of the residual units; the paper's largest model uses 5 units
        residual_hidden_dims: tuple[int, ...] = (256, 128, 64)

        def validate(self) -> None:
            require_dims("residual_hidden_dims", self.residual_hidden_dims)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = select_features(feature_map, p.features).all
        self.embeddings = build_sparse_inputs(feature_map, features=self.inputs, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        width = self.embeddings.output_dim(self.inputs)
        self.residual_units = nn.Sequential(*(ResidualUnit(dim=width, hidden_dim=h) for h in p.residual_hidden_dims))
        self.head_input_dim = width
        self.score = nn.Linear(width, 1)

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the output layer reads: the residual units' output, ``(B, N)``."""
        return self.residual_units(self.embeddings.concat(batch, self.inputs))  # (B, N)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.score(self.head_input(batch)).squeeze(-1)  # (B,)
