"""ESMM: the Entire Space Multi-task Model (Ma et al., SIGIR 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.multi_task_base import MultiTaskParams, MultiTaskRanker
from recstack.models.params import require
from recstack.models.registry import register_model
from recstack.nn.mlp import run_chain

__all__ = ["ESMM"]

_TWO_TARGETS = "esmm needs two targets: a click target and a conversion target with condition: <click>"


@register_model("esmm")
class ESMM(MultiTaskRanker):
    """Two towers, CTR and CVR, over the same shared embeddings.

    ``targets`` are ``(click, conversion)``: the second declared in the schema with
    ``condition: <click>``. The model returns the CTR logit and the CVR logit
    (``p(conversion | click)``); the ``multi_task`` task trains it as the paper does, over the
    entire impression space: BCE of pCTR against click and of pCTCVR = pCTR × pCVR against
    click·conversion, so the CVR tower learns only through pCTCVR and never from clicked rows
    alone (no sample selection bias). Its predicted heads are the click, the conversion given a
    click (pCVR) and ``<click>_and_<conversion>`` (pCTCVR).

    Each tower is an MLP of ``hidden_dims`` then ``tower_dims`` then a logit, as the paper's two
    base networks; only the embedding tables are shared (the paper's "feature representation
    transfer").

    Example::

        model = build_model("esmm", feature_map, {"targets": ["click", "like"]})
        logits = model(batch)  # {"click": pCTR logits (B,), "like": pCVR logits (B,)}
    """

    entire_space = True
    min_targets = 2
    model_name = "esmm"

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiTaskParams):
        hidden_dims: tuple[int, ...] = (128,)

        def validate(self) -> None:
            super().validate()
            require(len(self.targets) in (0, 2), "targets", _TWO_TARGETS + f", got {list(self.targets)}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None) -> None:
        params = params or self.Params()
        super().__init__(feature_map=feature_map, params=params)
        require(len(params.targets) == 2, "targets", _TWO_TARGETS + f", got {list(params.targets)}")
        self.ctr_bottom = params.mlp(self.input_dim)
        self.cvr_bottom = params.mlp(self.input_dim)
        self.build_towers(self.ctr_bottom.out_dim)

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:
        return [self.ctr_bottom(features), self.cvr_bottom(features)]  # (B, H) each

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{target: logits (B,)}``; each target's bottom and tower run as one chain (one
        fused node on CPU), the same values as ``towers[t](tower_inputs(x)[k])``."""
        features = self.features(batch)
        bottoms = (self.ctr_bottom, self.cvr_bottom)
        return {name: run_chain(features, [bottom, self.towers[name]]).squeeze(-1) for name, bottom in zip(self.targets, bottoms)}
