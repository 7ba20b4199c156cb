"""ComiRec (Cen et al., KDD 2020): controllable multi-interest recall, the SA and DR extractors.

Shape legend: B batch, L sequence length, K interests, D item embedding dim.

Both read the history through the item table (also the output layer) and give K interests;
training reads the one nearest the target (hard label-aware attention, ``readout: hard``), and
retrieval searches with all K, merged by max score::

    history (B, L) ── E ──▶ H (B, L, D) ──extractor──▶ V_u (B, K, D)   (user tower)
    training: v = V_u[argmax_k V_u^T e(target)]  (each position's prefix)  score v . E_i

- ``comirec_sa``: the self-attentive extractor, ``A = softmax(W2 tanh(W1 (H + P)^T))``,
  ``V_u = A H`` (:class:`~recstack.nn.interests.SelfAttentiveInterests`).
- ``comirec_dr``: dynamic routing with a bilinear map per position and interest, routing logits
  from zero, 3 iterations, gradients only through the last (the authors' code;
  :class:`~recstack.nn.interests.CapsuleRouting`).

The aggregation module of the paper (diversity-controlled re-ranking of the merged candidates)
is not part of the model; the merge is by max score.
"""

from __future__ import annotations

from dataclasses import dataclass

from recstack.data.feature_map import FeatureMap
from recstack.models.multi_interest import MultiInterestModel, MultiInterestParams
from recstack.models.params import param_errors, require
from recstack.models.registry import register_model
from recstack.nn.interests import Bilinear, CapsuleRouting, RoutingInit, SelfAttentiveInterests

__all__ = ["ComiRecDR", "ComiRecSA"]


@register_model("comirec_sa")
class ComiRecSA(MultiInterestModel):
    """ComiRec-SA: ``encode_user`` (B, K, D) from K self-attention heads over the history.

    Example:
        >>> model = build_model("comirec_sa", feature_map, {"num_interests": 4})  # doctest: +SKIP
        >>> model.encode_user(batch).shape  # (B, 4, D)  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiInterestParams):
        """ComiRec-SA parameters (D is the item table's dim).

        Attributes:
            hidden_dim: the width of W1; None: 4 D (the authors' code).
            positions: add learned positions (oldest first) to the attention's input.
        """

        hidden_dim: int | None = None
        positions: bool = True

        def validate(self) -> None:
            super().validate()
            require(self.hidden_dim is None or self.hidden_dim >= 1, "hidden_dim", f"must be >= 1, got {self.hidden_dim}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = self._item_inputs(feature_map, p)
        with param_errors("num_interests"):
            extractor = SelfAttentiveInterests(
                self.inputs.dim(p.history_feature),
                num_interests=p.num_interests,
                max_len=self._history_length(feature_map) if p.positions else 0,
                hidden_dim=p.hidden_dim,
            )
        self._build_interest_towers(p, extractor)


@register_model("comirec_dr")
class ComiRecDR(MultiInterestModel):
    """ComiRec-DR: ``encode_user`` (B, K, D) from dynamic routing with per-position maps.

    Example:
        >>> model = build_model("comirec_dr", feature_map, {"num_interests": 4})  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiInterestParams):
        """ComiRec-DR parameters.

        Attributes:
            iterations: routing rounds (paper: 3).
            detach_routing: no gradient through the rounds before the last (the authors' code).
        """

        iterations: int = 3
        embedding_init_std: float = 1.0
        detach_routing: bool = True

        def validate(self) -> None:
            super().validate()
            require(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = self._item_inputs(feature_map, p)
        with param_errors("num_interests"):
            extractor = CapsuleRouting(
                self.inputs.dim(p.history_feature),
                num_interests=p.num_interests,
                max_len=self._history_length(feature_map),
                iterations=p.iterations,
                bilinear=Bilinear.PER_POSITION,
                init=RoutingInit.ZEROS,
                detach_routing=p.detach_routing,
            )
        self._build_interest_towers(p, extractor)
