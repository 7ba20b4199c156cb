"""Residual unit of Deep Crossing (Shan et al., 2016)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualUnit(nn.Module):
    """``out = ReLU(x + W1 ReLU(W0 x + b0) + b1)``: the ReLU comes after the addition.

    Args:
        dim: D, width of the input and the output.
        hidden_dim: width of the inner layer.

    Example:
        >>> unit = ResidualUnit(dim=16, hidden_dim=32)
        >>> unit(torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """

    def __init__(self, *, dim: int, hidden_dim: int):
        super().__init__()
        self.inner = nn.Linear(dim, hidden_dim)  # W0, b0
        self.outer = nn.Linear(hidden_dim, dim)  # W1, b1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, D). Returns (B, D)."""
        residual = self.outer(torch.relu(self.inner(x)))  # (B, D)
        return torch.relu(x + residual)
