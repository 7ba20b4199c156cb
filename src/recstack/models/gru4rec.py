"""GRU4Rec (Hidasi et al., ICLR 2016) as recall, trained with the full-softmax cross-entropy that
later work found best (Hidasi & Czapp 2023; RecBole's GRU4Rec).

Shape legend: B batch, L sequence length, D item embedding dim, H GRU state width.

The item embedding E (R, D) embeds the history and is the output layer; a GRU reads the
embedded items in order and its state at t, projected back to D, scores the next item::

    history (B, L) ── E ── dropout ── GRU (H, num_layers) ── Linear(H -> D) ── F (B, L, D)
    score(t, i) = F_t . E_i                     (user vector: F at the last real position)

The GRU at t reads only items up to t (causal by construction); padding is packed away.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from recstack.data.feature_map import FeatureMap
from recstack.models.params import require, require_dropout
from recstack.models.registry import register_model
from recstack.models.sequence_retrieval import SequenceParams, SequenceRetrievalModel
from recstack.nn.dropout import Dropout
from recstack.nn.sequence import GRUEncoder

__all__ = ["GRU4Rec", "GRU4RecEncoder"]


class GRU4RecEncoder(nn.Module):
    """``(x (B, L, D), mask (B, L)) -> (B, L, D)``: dropout, GRU, projection back to D."""

    def __init__(self, *, dim: int, hidden_dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.gru = GRUEncoder(dim, hidden_dim, num_layers=num_layers)
        self.project = nn.Linear(hidden_dim, dim) if hidden_dim != dim else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        states = self.gru(self.dropout(x), mask)  # (B, L, H), zero at padding
        return self.project(states) * mask.unsqueeze(-1).to(x.dtype)  # (B, L, D)


@register_model("gru4rec")
class GRU4Rec(SequenceRetrievalModel):
    """GRU4Rec as a retrieval model: ``encode_user`` (B, D) from the history, items as rows of
    the input item table (train with ``loss: full_softmax``).

    Example:
        >>> model = build_model("gru4rec", feature_map, {"hidden_dim": 64})  # doctest: +SKIP
    """

    @dataclass(frozen=True, kw_only=True)
    class Params(SequenceParams):
        """GRU4Rec parameters.

        Attributes:
            hidden_dim: H, the GRU state width; None: the item table's dim D.
            num_layers: stacked GRU layers.
            dropout: on the embedded items (RecBole's ``dropout_prob``).
        """

        hidden_dim: int | None = None
        num_layers: int = 1
        dropout: float = 0.3

        def validate(self) -> None:
            require(self.hidden_dim is None or self.hidden_dim >= 1, "hidden_dim", f"must be >= 1, got {self.hidden_dim}")
            require(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
            require_dropout("dropout", self.dropout)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        self.inputs = self._item_inputs(feature_map, p)
        dim = self.inputs.dim(p.history_feature)
        encoder = GRU4RecEncoder(dim=dim, hidden_dim=p.hidden_dim or dim, num_layers=p.num_layers, dropout=p.dropout)
        self._build_towers(p, encoder)
