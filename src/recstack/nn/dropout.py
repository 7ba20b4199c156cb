"""Dropout whose CPU mask costs a fraction of ``torch.nn.functional.dropout``'s.

On CPU, ``F.dropout`` draws its mask with ``bernoulli_``: one double-precision uniform per
element, about 7-8 ns each on this project's machines, 40-90x the cost of the multiply it
masks. In SASRec's training step (seven dropouts on (B, L, D) activations and two on the
attention weights) that was 44% of the encoder's forward and backward. Here the mask comes from
16 random bits per element: one 64-bit draw of torch's generator gives four elements (the sign
bit of each 16-bit lane is dropped, so every lane is uniform over 15 bits), compared with the
threshold ``round(p * 2**15)``. The drop probability is therefore p to within 2**-16, and the
kept values are scaled by the inverse of the exact keep probability, so the expectation is
unchanged, as with ``F.dropout``. Same generator, so ``torch.manual_seed`` reproduces the masks.

No library op gives this on CPU (inductor's random lowering needs ``torch.compile``, which a
short CPU run does not repay; ``docs/benchmarks.md``); the mask is built from torch ops and
autograd differentiates the multiply, so there is no hand-written backward. Other devices use
``F.dropout`` (CUDA's kernel draws its mask inside the fused op).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout", "dropout"]

_LEVELS = 1 << 15  # the uniform levels of each 16-bit lane once its sign bit is cleared


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest to keep the mean
    (identity when not ``training`` or ``p == 0``); ``F.dropout``'s contract."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    if p == 1.0:
        return x * 0.0
    threshold = round(p * _LEVELS)
    if threshold == 0:  # p below 2**-16: nothing would ever be dropped at this resolution
        return F.dropout(x, p, training=True)
    count = x.numel()
    draws = torch.empty((count + 3) // 4, dtype=torch.int64).random_()  # 63 uniform bits each
    lanes = draws.view(torch.int16)[:count].view(x.shape)  # four 16-bit lanes per draw
    # integer arithmetic instead of `>=`: a bool result and its conversion cost ~6x these ops;
    # in place on the draws' own buffer, so no intermediate tensor is allocated
    dropped = lanes.bitwise_and_(_LEVELS - 1).sub_(threshold).bitwise_right_shift_(15)  # -1 below the threshold, else 0
    keep_probability = (_LEVELS - threshold) / _LEVELS
    mask = dropped.to(x.dtype).add_(1.0).mul_(1.0 / keep_probability)  # 0 or 1 / P(keep)
    return x * mask


class Dropout(nn.Module):
    """``nn.Dropout``'s contract with :func:`dropout`'s cheaper CPU mask; no parameters, so
    state dicts are unchanged."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
