"""Shared-bottom multi-task ranker (Caruana 1997; the baseline of MMoE and PLE's papers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from recstack.data.feature_map import FeatureMap
from recstack.models.multi_task_base import MultiTaskParams, MultiTaskRanker
from recstack.models.registry import register_model

__all__ = ["SharedBottom"]


@register_model("shared_bottom")
class SharedBottom(MultiTaskRanker):
    """Features -> one shared MLP (``hidden_dims``) -> one tower per target -> a logit each.

    Example (``tests/multitask`` runs it)::

        model = build_model("shared_bottom", feature_map, {"targets": ["click", "like"]})
        model(batch)  # {"click": (B,), "like": (B,)} logits
    """

    model_name = "shared_bottom"

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiTaskParams):
        hidden_dims: tuple[int, ...] = (128,)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None) -> None:
        super().__init__(feature_map=feature_map, params=params or self.Params())
        self.bottom = self.params.mlp(self.input_dim)
        self.build_towers(self.bottom.out_dim)

    def shared_layer(self) -> list[Tensor]:
        """The shared bottom's last layer."""
        return [self.bottom.layers[-1].linear.weight]

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:
        shared = self.bottom(features)  # (B, H): every tower reads the same vector
        return [shared] * len(self.targets)
