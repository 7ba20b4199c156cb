"""Second-order factorization machine interaction (Rendle, 2010), as used by DeepFM."""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Sum of all pairwise dot products between field embeddings.

    ``sum_{i<j} <v_i, v_j>`` computed in O(F*D) as
    ``0.5 * sum_d((sum_i v_id)^2 - sum_i v_id^2)``.

    Example:
        >>> fm = FactorizationMachine()
        >>> fm(torch.randn(4, 3, 8)).shape
        torch.Size([4])
    """

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Args: embeddings (B, F, D). Returns the interaction term (B,)."""
        summed = embeddings.sum(dim=1)  # (B, D)
        # sum_d (sum_i v_id)^2 - sum_{i,d} v_id^2: the two sums over d taken before subtracting
        return 0.5 * ((summed * summed).sum(dim=1) - (embeddings * embeddings).sum(dim=(1, 2)))  # (B,)
