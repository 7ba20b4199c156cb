"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.multi_task_base import MultiTaskParams, MultiTaskRanker
from recstack.models.params import require
from recstack.models.registry import register_model
from recstack.nn.experts import ExpertGroup, Gate, mix

__all__ = ["MMoE"]


@register_model("mmoe")
class MMoE(MultiTaskRanker):
    """``num_experts`` expert MLPs over the features; one softmax gate per target over the same
    features weighs them (eq. 5-6 of the paper: ``f^k(x) = sum_i g^k(x)_i f_i(x)``,
    ``g^k(x) = softmax(W_gk x)``); each target's tower reads its own mixture.

    Example::

        model = build_model("mmoe", feature_map, {"targets": ["click", "like"], "num_experts": 4})
        model(batch)       # {"click": (B,), "like": (B,)} logits
        model.gates(batch)  # {"click": (B, 4), "like": (B, 4)}, rows summing to 1
    """

    model_name = "mmoe"

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiTaskParams):
        """``hidden_dims``: each expert's layers (ReLU); ``gate_batch_norm``: batch-normalise each
        gate's logits before its softmax (torch-rechub's gates; the paper's are ``softmax(W x)``)."""

        hidden_dims: tuple[int, ...] = (64,)
        num_experts: int = 4
        gate_batch_norm: bool = False

        def validate(self) -> None:
            super().validate()
            require(self.num_experts >= 1, "num_experts", f"must be >= 1, got {self.num_experts}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None) -> None:
        super().__init__(feature_map=feature_map, params=params or self.Params())
        p = self.params
        self.experts = ExpertGroup(in_dim=self.input_dim, num_experts=p.num_experts, hidden_dims=p.hidden_dims, dropout=p.dropout,
                                    batch_norm=p.batch_norm)
        self.gate = nn.ModuleDict(
            {name: Gate(in_dim=self.input_dim, num_experts=p.num_experts, batch_norm=p.gate_batch_norm) for name in self.targets}
        )
        self.build_towers(self.experts.out_dim)

    def shared_layer(self) -> list[Tensor]:
        """Every expert's last layer (the experts are what the targets share)."""
        return [self.experts.weights[-1]]

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:
        experts = self.experts(features)  # (B, E, D)
        return [mix(experts, self.gate[name](features)) for name in self.targets]  # (B, D) each

    @torch.no_grad()
    def gates(self, batch: Batch) -> dict[str, Tensor]:
        """Each target's gate weights ``(B, E)`` on ``batch`` (for inspection and tests)."""
        features = self.features(batch)
        return {name: self.gate[name](features) for name in self.targets}
