"""Pooling of padded sequences (behaviour histories, multi-valued features) to one vector."""

from __future__ import annotations

import torch

from recstack.schema import Pooling  # one enum for the schema and the layers


def masked_pool(
    values: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    mode: Pooling | str = Pooling.MEAN,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool a padded sequence over its real positions only.

    Padded positions never contribute, whatever they hold (even inf or NaN). A row with no
    real position (or, for ``weighted_mean``, whose weights sum to 0) pools to zeros, never
    NaN.

    Args:
        values: (B, L, D) padded sequence.
        mask: (B, L) bool, True at real positions; None means every position is real.
        mode: ``mean`` (over real positions), ``sum``, ``max`` (per dim),
            ``weighted_sum`` (sum of w_l v_l) or ``weighted_mean`` (weighted_sum / sum w_l).
        weights: (B, L) per-position weights, required by the weighted modes only.

    Returns:
        (B, D) pooled values.

    Example:
        >>> values = torch.tensor([[[1.0], [3.0], [99.0]], [[5.0], [0.0], [0.0]]])
        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> masked_pool(values, mask, mode="mean").tolist()
        [[2.0], [0.0]]
    """
    kind = Pooling(mode)  # raises ValueError on an unknown name
    if mask is None:
        mask = torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
    valid = mask.unsqueeze(-1)  # (B, L, 1)
    clean = values.masked_fill(~valid, 0.0)  # (B, L, D): padding can hold anything

    if kind is Pooling.SUM:
        return clean.sum(dim=1)
    if kind is Pooling.MEAN:
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1).to(values.dtype)  # (B, 1)
        return clean.sum(dim=1) / counts
    if kind is Pooling.MAX:
        lowest = torch.finfo(values.dtype).min
        maxed = values.masked_fill(~valid, lowest).amax(dim=1)  # (B, D)
        has_any = mask.any(dim=1, keepdim=True)  # (B, 1)
        return torch.where(has_any, maxed, torch.zeros_like(maxed))

    if weights is None:
        raise ValueError(f"pooling mode {kind.value!r} needs weights")
    w = weights.masked_fill(~mask, 0.0).unsqueeze(-1)  # (B, L, 1)
    weighted = (w * clean).sum(dim=1)  # (B, D)
    if kind is Pooling.WEIGHTED_SUM:
        return weighted
    total = w.sum(dim=1)  # (B, 1)
    is_zero = total == 0
    safe_total = torch.where(is_zero, torch.ones_like(total), total)
    return torch.where(is_zero, torch.zeros_like(weighted), weighted / safe_total)
