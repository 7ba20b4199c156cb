"""SASRec (Kang & McAuley, ICDM 2018): self-attentive sequential recommendation, as recall.

Shape legend: B batch, L sequence length, D item embedding dim, N training positions, R item
table rows.

The item embedding E (R, D) embeds the history and is also the output layer: the score of item
i after position t is ``F_t . E_i``, where F_t is the causal transformer's output at t::

    history (B, L) ── E ── * sqrt(D) ── + P[position] ── dropout ──┐
                                                                    │ num_layers x [causal self-attention,
                                                                    │ point-wise FFN], residual, layer norm
    F (B, L, D) ◀── final layer norm ◀─────────────────────────────┘
    score(t, i) = F_t . E_i                     (user vector: F at the last real position)

As in the authors' code: embeddings scaled by sqrt(D), learned positions counted back from the
newest item (the left padding of their code puts the newest item at the same slot in every
sequence: :func:`~recstack.nn.sequence.recency_positions`), layer norm before each sub-layer and
a final one. Padded positions never change a real one's output, and position t never sees
t + 1 (causal).

Losses are tasks (``task: {type: retrieval, loss: ...}``): ``full_softmax`` (cross-entropy over
the whole catalogue), ``sampled_softmax`` (with log-Q correction) and ``sampled_bce`` (the paper:
BCE on the positive and one sampled negative per position). Any retrieval task reads the pairs.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from torch import Tensor, nn

from recstack.data.feature_map import FeatureMap
from recstack.models.params import param_errors, require, require_dropout
from recstack.models.registry import register_model
from recstack.models.sequence_retrieval import SequenceParams, SequenceRetrievalModel
from recstack.nn.sequence import CausalSelfAttentionEncoder, recency_positions

__all__ = ["PositionScheme", "SASRec", "SASRecEncoder"]


class PositionScheme(str, enum.Enum):
    """Which learned position a sequence's item gets."""

    RECENCY = "recency"  # counted back from the newest item (the authors' left padding)
    ABSOLUTE = "absolute"  # counted from the oldest item


class SASRecEncoder(nn.Module):
    """``(x (B, L, D), mask (B, L)) -> (B, L, D)``: scale, positions, the causal transformer.

    Args:
        dim: D.
        max_len: the learned positions (the history feature's maxlen).
        num_layers / num_heads / dropout / pre_norm: the transformer's.
        positions: :class:`PositionScheme`.
        scale_embeddings: multiply the item embeddings by sqrt(D) (the authors' code).
    """

    def __init__(
        self, *, dim: int, max_len: int, num_layers: int, num_heads: int, dropout: float, pre_norm: bool,
        positions: PositionScheme, scale_embeddings: bool, attention_dropout: float | None = None,
    ):  # fmt: skip
        super().__init__()
        self.scale = math.sqrt(dim) if scale_embeddings else 1.0
        self.recency = positions is PositionScheme.RECENCY
        self.transformer = CausalSelfAttentionEncoder(
            dim, num_layers=num_layers, num_heads=num_heads, max_len=max_len, dropout=dropout, pre_norm=pre_norm, causal=True,
            attention_dropout=attention_dropout,
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        positions = recency_positions(mask) if self.recency else None  # (B, L) or 0..L-1
        return self.transformer(x * self.scale, mask, positions)  # (B, L, D), zero at padding

    def encode_packed(self, rows: Tensor, mask: Tensor) -> Tensor:
        """``forward(x, mask)[mask]`` (P, D) from ``rows = x[mask]`` (P, D), without encoding
        the padding (training)."""
        positions = recency_positions(mask) if self.recency else None  # (B, L) or 0..L-1
        return self.transformer.encode_packed(rows * self.scale, mask, positions)  # (P, D)


@register_model("sasrec")
class SASRec(SequenceRetrievalModel):
    """SASRec as a retrieval model: ``encode_user`` (B, D) from the history, items as rows of
    the input item table.

    Example:
        >>> model = build_model("sasrec", feature_map, {"num_layers": 2, "dropout": 0.2})  # doctest: +SKIP
        >>> pairs = model.retrieval_pairs(batch)  # N (query, next item) pairs, every position  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(SequenceParams):
        """SASRec parameters (the paper's defaults; D is the item table's dim).

        Attributes:
            num_layers: self-attention blocks (paper: 2).
            num_heads: attention heads (paper: 1); must divide D.
            dropout: on the embeddings, attention weights and sub-layer outputs (paper: 0.2 on
                MovieLens-1M, 0.5 on the sparse sets).
            pre_norm: layer norm before each sub-layer and a final one (the authors' code);
                False: after each residual sum.
            positions: ``recency`` (the authors' left padding) or ``absolute``.
            scale_embeddings: item embeddings times sqrt(D) before the positions are added.
            max_len: learned positions; None: the history feature's maxlen.
            attention_dropout: on the attention weights; None: ``dropout`` (the paper). 0 lets
                CPU training use PyTorch's fused attention kernel.
        """

        num_layers: int = 2
        num_heads: int = 1
        dropout: float = 0.2
        pre_norm: bool = True
        positions: PositionScheme = PositionScheme.RECENCY
        scale_embeddings: bool = True
        max_len: int | None = None
        attention_dropout: float | None = None

        def validate(self) -> None:
            require(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
            require(self.num_heads >= 1, "num_heads", f"must be >= 1, got {self.num_heads}")
            require(self.max_len is None or self.max_len >= 1, "max_len", f"must be >= 1, got {self.max_len}")
            require_dropout("dropout", self.dropout)
            if self.attention_dropout is not None:
                require_dropout("attention_dropout", self.attention_dropout)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = self._item_inputs(feature_map, p)
        dim = self.inputs.dim(p.history_feature)
        longest = feature_map.schema[p.history_feature].maxlen
        max_len = p.max_len or longest
        require(max_len >= longest, "max_len", f"{max_len} positions cannot hold {p.history_feature!r}'s maxlen {longest}")
        require(dim % p.num_heads == 0, "num_heads", f"{p.num_heads} heads do not divide the item table's dim {dim}")
        with param_errors("num_heads"):
            encoder = SASRecEncoder(
                dim=dim, max_len=max_len, num_layers=p.num_layers, num_heads=p.num_heads, dropout=p.dropout,
                pre_norm=p.pre_norm, positions=p.positions, scale_embeddings=p.scale_embeddings, attention_dropout=p.attention_dropout,
            )  # fmt: skip
        self._build_towers(p, encoder)
