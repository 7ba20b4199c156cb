"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn

from recstack.data.feature_map import FeatureMap
from recstack.models.multi_task_base import MultiTaskParams, MultiTaskRanker
from recstack.models.params import require
from recstack.models.registry import register_model
from recstack.nn.experts import CGCLayer

__all__ = ["PLE"]


@register_model("ple")
class PLE(MultiTaskRanker):
    """``num_levels`` stacked CGC layers (``nn.experts.CGCLayer``), then one tower per target.

    Each level has ``num_shared_experts`` shared experts and ``num_specific_experts`` experts per
    target; target k's gate mixes its own and the shared experts from its previous level's output,
    and every level but the last has a shared gate over all experts whose output feeds the next
    level's shared experts (eq. 5-6 of the paper). ``num_levels: 1`` is CGC alone.

    Example::

        model = build_model("ple", feature_map, {"targets": ["click", "like"], "num_levels": 2})
        model(batch)  # {"click": (B,), "like": (B,)} logits
    """

    model_name = "ple"

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiTaskParams):
        """``hidden_dims``: each expert's layers (ReLU), the same at every level;
        ``gate_batch_norm``: batch-normalise each gate's logits before its softmax (torch-rechub's
        gates; the paper's are ``softmax(W x)``)."""

        hidden_dims: tuple[int, ...] = (64,)
        num_levels: int = 2
        num_shared_experts: int = 2
        num_specific_experts: int = 2
        gate_batch_norm: bool = False

        def validate(self) -> None:
            super().validate()
            for key in ("num_levels", "num_shared_experts", "num_specific_experts"):
                require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None) -> None:
        super().__init__(feature_map=feature_map, params=params or self.Params())
        p = self.params
        levels, in_dim = [], self.input_dim
        for level in range(p.num_levels):
            layer = CGCLayer(
                in_dim=in_dim,
                num_tasks=len(self.targets),
                num_shared=p.num_shared_experts,
                num_specific=p.num_specific_experts,
                hidden_dims=p.hidden_dims,
                shared_output=level < p.num_levels - 1,  # the last level has no shared gate
                dropout=p.dropout,
                batch_norm=p.batch_norm,
                gate_batch_norm=p.gate_batch_norm,
            )
            levels.append(layer)
            in_dim = layer.out_dim
        self.levels = nn.ModuleList(levels)
        self.build_towers(in_dim)

    def level_outputs(self, features: Tensor) -> list[tuple[list[Tensor], Tensor | None]]:
        """Every level's per-target outputs ``(B, D)`` and shared output (None at the last)."""
        task_inputs: list[Tensor] = [features] * len(self.targets)
        shared: Tensor | None = features
        outputs = []
        for layer in self.levels:
            task_inputs, shared = layer(task_inputs, shared)
            outputs.append((task_inputs, shared))
        return outputs

    def shared_layer(self) -> list[Tensor]:
        """The last level's shared experts' last layer."""
        return [self.levels[-1].shared.weights[-1]]

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:
        return self.level_outputs(features)[-1][0]
