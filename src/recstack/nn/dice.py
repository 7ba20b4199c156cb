"""Dice, the data-adaptive activation of Deep Interest Network (Zhou et al., 2018)."""

from __future__ import annotations

import torch
from torch import nn


def masked_batch_norm(
    norm: nn.BatchNorm1d,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    valid_rows: int | None = None,
) -> torch.Tensor:
    """Apply a ``BatchNorm1d`` per feature over every leading position, skipping padding.

    In training, the batch statistics (and the running-average update) use only the
    positions where ``mask`` is True, or only the first ``valid_rows`` rows of a 2-D ``x``
    (padding appended at the end: the cheap case, no gather); in evaluation every position
    is normalised with the running statistics. Padded positions come back normalised with
    zero (their values are not meaningful and should be ignored downstream).

    Args:
        norm: the normalisation layer over the last dimension (``num_features == D``).
        x: (..., D) values, e.g. (B, D) or (B, L, D).
        mask: (...) bool, True at real positions; None means every position is real.
        valid_rows: only with a 2-D ``x`` and no ``mask``: rows from this one on are padding.

    Returns:
        (..., D) normalised values.
    """
    if valid_rows is not None and (mask is not None or x.dim() != 2):
        raise ValueError("valid_rows needs a 2-D input and no mask")
    if not norm.training and norm.track_running_stats:
        # Inference written out elementwise: it broadcasts over any leading dims and exports to
        # ONNX for any batch size (the exporter rejects batch_norm of a reshaped input).
        normed = (x - norm.running_mean) * torch.rsqrt(norm.running_var + norm.eps)  # (..., D)
        return normed * norm.weight + norm.bias if norm.affine else normed
    flat = x.reshape(-1, x.shape[-1])  # (N, D), N = product of leading dims
    if valid_rows is not None and norm.training and valid_rows < len(flat):
        # the real rows are a prefix: normalise that view, then append the padding's zeros
        return nn.functional.pad(norm(flat[:valid_rows]), (0, 0, 0, len(flat) - valid_rows))
    if mask is None or not norm.training:
        return norm(flat).reshape(x.shape)
    valid = mask.reshape(-1)  # (N,)
    normed = torch.zeros_like(flat)  # (N, D)
    if bool(valid.any()):
        normed[valid] = norm(flat[valid])
    return normed.reshape(x.shape)


class Dice(nn.Module):
    """Dice activation: a PReLU whose switch point follows the data distribution.

    ``p = sigmoid(BN(x))`` with a batch norm without affine parameters, then
    ``out = p * x + (1 - p) * alpha * x`` with a learned per-neuron ``alpha`` (initialised
    to 0, so Dice starts as a smoothed ReLU). Training uses per-neuron batch statistics,
    evaluation the running averages. Works on (B, D) and (B, L, D) inputs; for 3-D inputs
    the statistics are per neuron over all B*L positions, or only the real ones when a
    ``mask`` is given, so padding does not pollute them.

    Args:
        num_features: D, the number of neurons.
        epsilon: added to the variance; 1e-9 as in the DIN reference code.
        momentum: running-average momentum in PyTorch's convention, the weight of the new
            batch: ``running = (1 - momentum) * running + momentum * batch``. The default 0.1
            (PyTorch's own) is Keras/TensorFlow ``momentum=0.9``. The DIN reference code and
            DeepCTR keep Keras's default 0.99, which is ``momentum=0.01`` here: the running
            statistics then take ~450 steps to forget their initial (0, 1) to 1%, longer than an
            epoch of MovieLens-100K (~80 steps of 1024 rows), so evaluation after the first
            epochs would use stale statistics; 0.1 takes ~45 steps.

    Example:
        >>> dice = Dice(num_features=4)
        >>> dice(torch.randn(8, 4)).shape
        torch.Size([8, 4])
        >>> dice(torch.randn(8, 5, 4), mask=torch.rand(8, 5) > 0.3).shape
        torch.Size([8, 5, 4])
    """

    def __init__(self, *, num_features: int, epsilon: float = 1e-9, momentum: float = 0.1):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, eps=epsilon, momentum=momentum, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))  # (D,)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, valid_rows: int | None = None
    ) -> torch.Tensor:
        """Args: x (..., D); mask (...) bool or None; valid_rows: as in
        :func:`masked_batch_norm`. Returns (..., D)."""
        p = torch.sigmoid(masked_batch_norm(self.norm, x, mask, valid_rows=valid_rows))  # (..., D)
        # p * x + (1 - p) * alpha * x, with two fewer (..., D) temporaries to keep for backward
        return x * torch.addcmul(self.alpha, p, 1.0 - self.alpha)
