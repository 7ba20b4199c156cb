"""DCN-v2 (Wang et al., 2021): matrix cross layers (full, low-rank or a mixture of
low-rank experts), stacked under or parallel to a DNN."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import DeepParams, require, select_features
from recstack.models.registry import register_model
from recstack.nn.cross import CrossNetworkV2
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.mlp import Activation


class Structure(str, enum.Enum):
    """How the cross network and the DNN are combined."""

    STACKED = "stacked"  # logit = Linear(deep(cross(x0)))
    PARALLEL = "parallel"  # logit = Linear([cross(x0), deep(x0)])


@register_model("dcn_v2")
class DCNv2(nn.Module):
    """``x0 = [embeddings, dense]``; cross layers ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``.

    ``low_rank=None`` keeps full D x D matrices; ``low_rank=r`` factorises them as U V^T;
    ``num_experts=K > 1`` gates K low-rank experts per layer. ``structure`` stacks the DNN on
    the cross network or runs both on x0 and concatenates, then one Linear gives the logit.

    Example (``tests/models`` runs it)::

        model = build_model("dcn_v2", feature_map, {"low_rank": 16, "num_experts": 4, "structure": "stacked"})
        logits = model(batch)  # (B,)
    """

    head_module: ClassVar[str] = "score"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(DeepParams):
        num_cross_layers: int = 3
        low_rank: int | None = None  # None: full-rank W_l
        num_experts: int = 1  # more than 1 needs low_rank
        expert_activation: Activation = Activation.RELU
        structure: Structure = Structure.PARALLEL

        def validate(self) -> None:
            super().validate()
            require(self.num_cross_layers >= 1, "num_cross_layers", f"must be >= 1, got {self.num_cross_layers}")
            require(self.low_rank is None or self.low_rank >= 1, "low_rank", f"must be >= 1 or null, got {self.low_rank}")
            require(self.num_experts >= 1, "num_experts", f"must be >= 1, got {self.num_experts}")
            require(self.num_experts == 1 or self.low_rank is not None, "num_experts", "a mixture of experts needs low_rank")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = select_features(feature_map, p.features).all
        self.embeddings = build_sparse_inputs(feature_map, features=self.inputs, sparse=p.sparse_embeddings, init_std=p.embedding_init_std)
        width = self.embeddings.output_dim(self.inputs)
        self.cross = CrossNetworkV2(
            in_dim=width,
            num_layers=p.num_cross_layers,
            low_rank=p.low_rank,
            num_experts=p.num_experts,
            expert_activation=p.expert_activation,
        )
        self.deep = p.mlp(width)
        self.stacked = p.structure is Structure.STACKED
        self.head_input_dim = self.deep.out_dim if self.stacked else width + self.deep.out_dim
        self.score = nn.Linear(self.head_input_dim, 1)

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the output layer reads: the stacked networks' output ``(B, H)``, or the parallel
        ones' side by side ``(B, N + H)``."""
        x0 = self.embeddings.concat(batch, self.inputs)  # (B, N)
        if self.stacked:
            return self.deep(self.cross(x0))  # (B, H)
        return torch.cat([self.cross(x0), self.deep(x0)], dim=-1)  # (B, N + H)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.score(self.head_input(batch)).squeeze(-1)  # (B,)
