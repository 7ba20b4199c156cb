"""Target attention of Deep Interest Network (Zhou et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.nn.mlp import MLP, Activation


class ActivationUnit(nn.Module):
    """DIN's local activation unit: how relevant each behaviour is to the target item.

    Scores behaviour ``k_l`` against the query ``q`` from ``[q, k_l, q - k_l, q * k_l]``
    (4*D) through an MLP and a final Linear to one score. Scores are unnormalised.

    Args:
        dim: D, width of the query and of each key.
        hidden_dims: widths of the MLP layers.
        activation: activation of the MLP layers (DIN uses Dice or PReLU).

    Example:
        >>> unit = ActivationUnit(dim=8)
        >>> unit(torch.randn(4, 8), torch.randn(4, 5, 8)).shape
        torch.Size([4, 5])
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden_dims: Sequence[int] = (80, 40),
        activation: Activation | str = Activation.DICE,
    ):
        super().__init__()
        self.mlp = MLP(in_dim=4 * dim, hidden_dims=hidden_dims, activation=activation)
        self.score = nn.Linear(self.mlp.out_dim, 1)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Score every key.

        Args:
            query: (B, D) the target item.
            keys: (B, L, D) the behaviours.
            mask: (B, L) bool, True at real behaviours, so padding stays out of Dice's
                statistics; None means every position is real.

        Returns:
            (B, L) raw scores (padded positions hold meaningless values).
        """
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, D)
        features = torch.cat([q, keys, q - keys, q * keys], dim=-1)  # (B, L, 4D)
        hidden = self.mlp(features, mask)  # (B, L, H)
        return self.score(hidden).squeeze(-1)  # (B, L)


class TargetAttention(nn.Module):
    """Pools a behaviour sequence with weights that depend on the target item.

    ``out = sum_l w_l k_l`` with ``w_l = ActivationUnit(q, k_l)``. By default the weights
    are used as they are, without softmax, as in the DIN paper (so the output keeps the
    intensity of the user's interest); padded positions get weight 0. With
    ``softmax=True`` the weights are a softmax over the real positions only; a row without
    any real position gets all-zero weights (never NaN). Padding never changes the output,
    whatever it holds or how long it is.

    Args:
        dim: D, width of the query and of each key.
        hidden_dims: widths of the activation unit's MLP.
        activation: activation of the activation unit's MLP.
        softmax: normalise the weights with a masked softmax.

    Example:
        >>> attention = TargetAttention(dim=8)
        >>> query, keys = torch.randn(4, 8), torch.randn(4, 5, 8)
        >>> mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [False] * 5, [True] * 5])
        >>> attention(query, keys, mask).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden_dims: Sequence[int] = (80, 40),
        activation: Activation | str = Activation.DICE,
        softmax: bool = False,
    ):
        super().__init__()
        self.unit = ActivationUnit(dim=dim, hidden_dims=hidden_dims, activation=activation)
        self.softmax = softmax

    def attention_weights(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The weight of each behaviour, 0 at padded positions.

        Args:
            query: (B, D) the target item.
            keys: (B, L, D) the behaviours, padded.
            mask: (B, L) bool, True at real behaviours.

        Returns:
            (B, L) weights; rows sum to 1 (or 0 for an empty row) when ``softmax``.
        """
        keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding may hold anything
        scores = self.unit(query, keys, mask)  # (B, L)
        if not self.softmax:
            return scores.masked_fill(~mask, 0.0)
        # A finite minimum, not -inf: an all-padding row then gives a uniform softmax,
        # zeroed by the mask below, instead of NaN.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # (B, L)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: query (B, D); keys (B, L, D); mask (B, L) bool. Returns (B, D)."""
        weights = self.attention_weights(query, keys, mask)  # (B, L)
        keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, L, D)
        return torch.einsum("bl,bld->bd", weights, keys)  # (B, D)
