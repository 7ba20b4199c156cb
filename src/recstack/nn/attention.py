"""Target attention of Deep Interest Network (Zhou et al., 2018)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recstack.nn.fused import cpu_autocast_dtype, fast_path_applies
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
        if mask is None:
            return self._score(query, keys)  # (B, L)
        # Only real positions are scored: padding is skipped instead of computed and
        # masked out of Dice's statistics at every layer (same statistics, same scores).
        # index_select/index_copy rather than keys[mask]: their backward is a plain
        # index_add, not the sorting accumulate of index_put.
        batch_size, length, dim = keys.shape
        flat = mask.reshape(-1).nonzero().squeeze(-1)  # (N,) positions in B*L
        rows = torch.div(flat, length, rounding_mode="floor")  # (N,)
        packed = keys.reshape(-1, dim).index_select(0, flat)  # (N, D)
        scores = keys.new_zeros(batch_size * length)  # (B*L,)
        if self.training and flat.numel() == 0:  # batch statistics need at least one position
            return scores.view(batch_size, length)
        return scores.index_copy(0, flat, self._score(query, packed, rows)).view(batch_size, length)

    def score_packed(
        self, query: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, valid_rows: int | None = None
    ) -> torch.Tensor:
        """Scores (P,) of packed keys (P, D), each against ``query[rows]`` (query (B, D)).
        With ``valid_rows``, keys from that one on are padding: kept out of Dice's and batch
        norm's statistics, their scores meaningless."""
        return self._score(query, keys, rows, valid_rows)

    def _score(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        rows: torch.Tensor | None = None,
        valid_rows: int | None = None,
    ) -> torch.Tensor:
        """Scores (...) of keys (..., D): (B, L, D) against query (B, D), or packed (N, D)
        against query[rows]."""
        # The first Linear over [q, k, q - k, q * k] is split by block:
        # W_q q + W_k k + W_d (q - k) + W_p (q * k) = (W_q + W_d) q + [W_k - W_d, W_p] [k, q * k],
        # so the query's part is computed once per row instead of once per position, and
        # the (..., 4D) concatenation is never built.
        first = self.mlp.layers[0]
        w_q, w_k, w_d, w_p = first.linear.weight.chunk(4, dim=1)  # (H, D) each
        query_part = nn.functional.linear(query, w_q + w_d, first.linear.bias)  # (B, H)
        if rows is None:
            q = query.unsqueeze(1)  # (B, 1, D)
            query_part = query_part.unsqueeze(1)  # (B, 1, H)
        else:
            q, query_part = query.index_select(0, rows), query_part.index_select(0, rows)  # (N, D), (N, H)
        key_part = nn.functional.linear(
            torch.cat([keys, q * keys], dim=-1), torch.cat([w_k - w_d, w_p], dim=1)
        )  # (..., H)
        hidden = first.activate(key_part + query_part, valid_rows=valid_rows)  # (..., H)
        for layer in self.mlp.layers[1:]:
            hidden = layer(hidden, valid_rows=valid_rows)
        return self.score(hidden).squeeze(-1)  # (...)


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
        scores = self.unit(query, keys, mask)  # (B, L); padded keys are never read
        if not self.softmax:
            return scores.masked_fill(~mask, 0.0)
        # A finite minimum, not -inf: an all-padding row then gives a uniform softmax,
        # zeroed by the mask below, instead of NaN.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # (B, L)

    def attend(
        self, query: torch.Tensor, mask: torch.Tensor, keys_at: Callable[[torch.Tensor | None], torch.Tensor]
    ) -> torch.Tensor:
        """The pooled behaviours ``(B, D)``, on the fastest layout the step allows.

        While training on a fast path (:func:`~recstack.nn.fused.fast_path_applies`, any
        device) only the real positions are looked up, scored and pooled
        (:meth:`forward_packed`); otherwise (evaluation, export, ``RECSTACK_FUSED=0``) the
        padded layout of :meth:`forward`. The same values either way.

        Args:
            query: (B, D) the target item.
            mask: (B, L) bool, True at real behaviours.
            keys_at: ``keys_at(flat)`` gives the keys (P, D) at ``flat`` (P,), indexes into
                the (B * L) flattened positions; ``keys_at(None)`` all of them, (B, L, D).
                A model passes its sparse inputs' ``sequence`` lookup.
        """
        if fast_path_applies(query, any_device=True):
            positions = PackedPositions.from_mask(mask, pad_to=packing_multiple(mask.device))
            return self.forward_packed(query, keys_at(positions.flat), positions)  # (B, D)
        return self(query, keys_at(None), mask)  # (B, D)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: query (B, D); keys (B, L, D); mask (B, L) bool. Returns (B, D)."""
        weights = self.attention_weights(query, keys, mask)  # (B, L)
        keys = keys.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, L, D)
        return (weights.unsqueeze(-1) * keys).sum(dim=1)  # (B, D); not einsum's B (1, L) x (L, D) matmuls: 1.3-4x slower on CPU

    def forward_packed(self, query: torch.Tensor, keys: torch.Tensor, positions: PackedPositions) -> torch.Tensor:
        """The same output as :meth:`forward`, from the real behaviours only.

        The training path: no (B, L, D) tensor is built, looked up or masked, and the pooling
        is one ``index_add``. Export keeps :meth:`forward` (the ONNX exporter mistranslates an
        ``index_add`` with repeated rows).

        Args:
            query: (B, D) the target item.
            keys: (P, D) the behaviours at ``positions.flat``: the real ones, then any padding.
            positions: where they sit in the padded (B, L) layout.

        Returns:
            (B, D).
        """
        pooled = keys.new_zeros(positions.batch_size, keys.shape[-1])  # (B, D)
        count = positions.count
        if count == 0:  # Dice's batch statistics need at least one position
            return pooled
        scores = self.unit.score_packed(query, keys, positions.rows, valid_rows=count)[:count]  # (N,)
        flat, rows, keys = positions.flat[:count], positions.rows[:count], keys[:count]
        if self.softmax:
            padded = scores.new_full((positions.batch_size * positions.length,), torch.finfo(scores.dtype).min)
            padded = padded.index_copy(0, flat, scores).view(positions.batch_size, positions.length)
            scores = torch.softmax(padded, dim=-1).reshape(-1).index_select(0, flat)  # (N,)
        return pooled.index_add(0, rows, keys * scores.to(keys.dtype).unsqueeze(-1))  # (B, D)


@dataclass(frozen=True)
class PackedPositions:
    """The real positions of a padded (B, L) layout, row-major.

    ``flat`` (P,) indexes the (B * L) flattened layout, ``rows`` (P,) is each one's row. The
    first ``count`` entries are the real positions; any after them (``from_mask``'s
    ``pad_to``) repeat the last real one, so that a step's packed size falls on one of a few
    values (see :func:`packing_multiple`).
    """

    flat: torch.Tensor
    rows: torch.Tensor
    batch_size: int
    length: int
    count: int

    @classmethod
    def from_mask(cls, mask: torch.Tensor, pad_to: int = 1) -> "PackedPositions":
        """From a (B, L) bool mask, True at real positions; the packed size is rounded up to
        a multiple of ``pad_to``."""
        batch_size, length = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(-1)  # (N,)
        count = flat.numel()
        padding = -count % pad_to if count else 0
        if padding:
            flat = torch.cat([flat, flat[-1:].expand(padding)])  # (P,)
        rows = torch.div(flat, length, rounding_mode="floor")
        return cls(flat=flat, rows=rows, batch_size=batch_size, length=length, count=count)


def packing_multiple(device: torch.device) -> int:
    """What to round DIN's packed history size up to on ``device``: 1024 positions under CPU
    autocast, else 1 (no padding).

    oneDNN builds its lower-precision matmul kernels for each new row count (tens of ms a
    step when every batch brings a new count, and each kept in its primitive cache); on the
    few sizes padding leaves, they are built once. Full-precision CPU matmuls (MKL) and CUDA
    build nothing per shape, so padding would only cost there.
    """
    return 1024 if device.type == "cpu" and cpu_autocast_dtype() is not None else 1
