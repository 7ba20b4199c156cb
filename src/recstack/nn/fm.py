"""Second-order factorization machine interaction (Rendle, 2010), as used by DeepFM."""

from __future__ import annotations

import torch
from torch import nn

from recstack.nn.fused import fast_path_applies


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
        if fast_path_applies(embeddings):
            return _FMFunction.apply(embeddings)
        summed = embeddings.sum(dim=1)  # (B, D)
        # sum_d (sum_i v_id)^2 - sum_{i,d} v_id^2: the two sums over d taken before subtracting
        return 0.5 * ((summed * summed).sum(dim=1) - (embeddings * embeddings).sum(dim=(1, 2)))  # (B,)


class _FMFunction(torch.autograd.Function):
    """The interaction as one training node: d/dv_fd = g * (sum_i v_id - v_fd)."""

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        summed = embeddings.sum(dim=1)  # (B, D)
        ctx.save_for_backward(embeddings, summed)
        return ((summed * summed).sum(dim=1) - (embeddings * embeddings).sum(dim=(1, 2))).mul_(0.5)  # (B,)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        embeddings, summed = ctx.saved_tensors
        return (summed.unsqueeze(1) - embeddings).mul_(grad.view(-1, 1, 1))  # (B, F, D)
