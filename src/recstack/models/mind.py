"""MIND (Li et al., CIKM 2019): multi-interest network with dynamic routing, as recall.

Shape legend: B batch, L sequence length, K interests, D item embedding dim.

The history's item embeddings are routed to K interest capsules by behaviour-to-interest dynamic
routing (a bilinear map S shared by every behaviour and interest, routing logits drawn once from
N(0, sigma^2) and never trained, squash, ``iterations`` rounds), each capsule then goes through a
ReLU layer (the paper's H layers over the capsules; no user profile features here). Training
reads the capsules with label-aware attention (``softmax(pow(V_u^T e_i, p))``, ``readout: soft``,
or its p -> inf limit, ``hard``); retrieval searches with every interest::

    history (B, L) ── E ──▶ (B, L, D) ── B2I routing (S shared) ──▶ (B, K, D) ── ReLU layer ──▶ V_u

With ``dynamic_interests`` (the paper) a user with |I_u| behaviours has
``K'_u = max(1, min(K, log2 |I_u|))`` interests; the tower's output keeps K slots, the unused
ones repeating interest 0 (merged by max, they change nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from recstack.data.feature_map import FeatureMap
from recstack.models.multi_interest import MultiInterestModel, MultiInterestParams, Readout
from recstack.models.params import param_errors, require
from recstack.models.registry import register_model
from recstack.nn.interests import Bilinear, CapsuleRouting, RoutingInit

__all__ = ["MIND"]


@register_model("mind")
class MIND(MultiInterestModel):
    """MIND: ``encode_user`` (B, K, D) interest capsules from dynamic routing.

    Example:
        >>> model = build_model("mind", feature_map, {"num_interests": 4, "iterations": 3})  # doctest: +SKIP
        >>> model.encode_user(batch).shape  # (B, 4, D)  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiInterestParams):
        """MIND parameters (D is the item table's dim).

        Attributes:
            iterations: routing rounds (paper: 3).
            dynamic_interests: K'_u = max(1, min(K, log2 |I_u|)) interests per user.
            init_std: sigma of the fixed random routing logits.
            relu_layer: a Linear(D, D) + ReLU on each capsule (the paper's H layers).
            detach_routing: no gradient through the rounds before the last (the ComiRec
                authors' MIND); False: every round (the paper).
        """

        readout: Readout = Readout.HARD
        iterations: int = 3
        embedding_init_std: float = 1.0
        dynamic_interests: bool = True
        init_std: float = 1.0
        relu_layer: bool = True
        detach_routing: bool = False

        def validate(self) -> None:
            super().validate()
            require(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
            require(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = self._item_inputs(feature_map, p)
        dim = self.inputs.dim(p.history_feature)
        with param_errors("num_interests"):
            extractor = CapsuleRouting(
                dim,
                num_interests=p.num_interests,
                max_len=self._history_length(feature_map),
                iterations=p.iterations,
                bilinear=Bilinear.SHARED,
                init=RoutingInit.RANDOM,
                init_std=p.init_std,
                dynamic_interests=p.dynamic_interests,
                detach_routing=p.detach_routing,
            )
        projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) if p.relu_layer else None
        self._build_interest_towers(p, extractor, projection)
