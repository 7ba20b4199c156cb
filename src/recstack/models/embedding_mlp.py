"""Embedding+MLP (seed 003): embed, stack with the numerics, MLP, score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import DeepParams, select_features
from recstack.models.registry import register_model
from recstack.models.state_keys import accept_old_keys
from recstack.nn.embedding import build_sparse_inputs


@register_model("embedding_mlp")
class EmbeddingMLP(nn.Module):
    """The five layers of seed 003: features -> embeddings -> stacking -> MLP -> scoring.

    Each embedded feature (sequences pooled with their pooling) and each dense feature is
    concatenated into one vector, fed through an MLP and a final Linear to one logit.

    Example (``tests/models`` runs it)::

        model = build_model("embedding_mlp", feature_map, {"hidden_dims": [128, 128]})
        logits = model(batch)  # (B,)
    """

    head_module: ClassVar[str] = "mlp"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        hidden_dims: tuple[int, ...] = (128, 128)  # seed 003: two 128-wide ReLU layers

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = select_features(feature_map, p.features).all
        self.embeddings = build_sparse_inputs(feature_map, features=self.inputs, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        self.head_input_dim = self.embeddings.output_dim(self.inputs)
        self.mlp = p.mlp(self.head_input_dim, head_dim=1)
        accept_old_keys(self, {"score.": "mlp.head."})  # runs saved when the model held the head

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the MLP reads: every feature embedded, pooled and concatenated, ``(B, N)``."""
        return self.embeddings.concat(batch, self.inputs)  # (B, N)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.mlp(self.head_input(batch)).squeeze(-1)  # (B,)
