"""SASRec's loss (Kang & McAuley 2018, eq. 7): binary cross-entropy on each position's next item
and one item sampled outside the user's sequence.

Shape legend: N pairs (positions), K negatives per pair, S items of a pair's sequence.

    loss = mean over positions of  -log sigmoid(r_pos) - sum_k log(1 - sigmoid(r_neg_k))

Negatives are drawn uniformly from the real item rows; one that falls in the pair's
``seen_rows`` (the user's sequence, from the model's pairs; else the positive) is redrawn, in
vectorised rounds that re-check only the redrawn ones. A pair whose every redraw failed (a
user who saw almost every item) keeps only its positive term; ``last_unresolved`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.models.params import require
from recstack.tasks.base import SingleHeadTask
from recstack.tasks.full_softmax import catalogue_model
from recstack.tasks.negative_sampling import FIRST_ITEM_ROW
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task
from recstack.tasks.retrieval_steps import _row_weights, _weighted_mean, positive_item_rows, positive_item_vectors, retrieval_pairs, scaled_cosine_of_pairs

__all__ = ["SampledBCETask"]

REDRAW_ROUNDS = 20


@register_task("sampled_bce")
class SampledBCETask(RegisteredTask, SingleHeadTask):
    """BCE on ``[positive, K negatives not in the sequence]`` per pair (SASRec: K = 1).

    Args:
        num_negatives: K per pair (the paper: 1).
        item_feature: the batch's item column for models whose pairs carry no rows.
        seed: the sampler's seed.
    """

    family: ClassVar[TaskType] = TaskType.RETRIEVAL
    needs_item_frequencies = False

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: retrieval, loss: sampled_bce, num_negatives: 1}``."""

        num_negatives: int = 1
        item_feature: str | None = None
        seed: int | None = None

        def validate(self) -> None:
            require(self.num_negatives >= 1, "num_negatives", f"must be >= 1, got {self.num_negatives}")

    @classmethod
    def from_params(cls, params: "SampledBCETask.Params") -> "SampledBCETask":
        return cls(num_negatives=params.num_negatives, item_feature=params.item_feature or "item_id", seed=params.seed)

    def __init__(self, *, num_negatives: int = 1, item_feature: str = "item_id", seed: int | None = None) -> None:
        self.params = self.Params(num_negatives=num_negatives, item_feature=item_feature, seed=seed)
        self.num_negatives = num_negatives
        self.item_feature = item_feature
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.last_unresolved = 0

    def set_item_frequencies(self, counts: Tensor) -> "SampledBCETask":
        """Not used: negatives are uniform."""
        return self

    def sample(self, seen: Tensor, num_item_rows: int, seen_of_pair: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(N, K)`` item rows outside each pair's seen items and a ``(N, K)`` mask of the ones
        that are (drawn ``REDRAW_ROUNDS`` times and still in the sequence).

        ``seen`` ``(R, S)``: item rows never to sample, per pair (``seen_of_pair`` None, R = N)
        or per sequence row, ``seen_of_pair`` ``(N,)`` giving each pair's row."""
        seen = seen.cpu()
        of_pair = torch.arange(seen.shape[0]) if seen_of_pair is None else seen_of_pair.cpu()  # (N,)
        shape = (of_pair.shape[0], self.num_negatives)
        in_sequence = _membership(seen, num_item_rows)
        negatives = torch.randint(FIRST_ITEM_ROW, num_item_rows, shape, generator=self.generator)
        pending = in_sequence(of_pair.unsqueeze(1).expand(shape), negatives).nonzero()  # (M, 2) [pair, k], row-major
        # each round redraws and re-checks only the pending negatives (a few % of N, then fewer)
        for _ in range(REDRAW_ROUNDS):
            if pending.shape[0] == 0:
                break
            pair, slot = pending.unbind(1)  # (M,), (M,)
            redraw = torch.randint(FIRST_ITEM_ROW, num_item_rows, (pending.shape[0],), generator=self.generator)
            negatives[pair, slot] = redraw
            pending = pending[in_sequence(of_pair[pair], redraw)]  # (M', 2)
        clash = torch.zeros(shape, dtype=torch.bool)
        clash[pending[:, 0], pending[:, 1]] = True
        return negatives, clash

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        catalogue = catalogue_model(model, "sampled_bce")
        pairs = retrieval_pairs(model, batch)
        queries = pairs.queries.float()  # (N, D)
        device = queries.device
        rows = positive_item_rows(pairs, batch, self.item_feature, device, why="sampled BCE")  # (N,)
        positives = positive_item_vectors(model, pairs, rows).float()  # (N, D)
        if pairs.seen_rows is not None:
            negative_rows, unresolved = self.sample(pairs.seen_rows, catalogue.num_item_rows, pairs.seen_of_pair)  # (N, K)
        else:
            negative_rows, unresolved = self.sample(rows.unsqueeze(1), catalogue.num_item_rows)  # (N, K)
        self.last_unresolved = int(unresolved.any(-1).sum())
        negatives = catalogue.encode_item_rows(negative_rows.to(device).reshape(-1)).float().view(*negative_rows.shape, -1)  # (N, K, D)
        positive_logits = (queries * positives).sum(-1)  # (N,)
        # multiply and sum, not einsum: that is N (1, D) x (D, K) matmuls, 6x slower for K = 1
        negative_logits = (queries.unsqueeze(1) * negatives).sum(-1)  # (N, K)
        keep = (~unresolved).to(device=device, dtype=negative_logits.dtype)  # (N, K)
        # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
        per_row = F.softplus(-positive_logits) + (F.softplus(negative_logits) * keep).sum(-1)  # (N,)
        return _weighted_mean(per_row, _row_weights(pairs.labels, per_row.dtype, device))

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(N,)`` probability that each pair's positive is the next item."""
        return torch.sigmoid(scaled_cosine_of_pairs(model, batch, self.item_feature, scale=1.0))

    def __repr__(self) -> str:
        return f"SampledBCETask(num_negatives={self.num_negatives})"


# a (R, items) bool table up to this size (16 MiB); larger, the draws are compared with the rows
_MEMBERSHIP_TABLE_MAX = 1 << 24


def _membership(seen: Tensor, num_item_rows: int) -> Callable[[Tensor, Tensor], Tensor]:
    """``in_sequence(row, item)``: whether ``item`` is among ``seen[row]`` (same-shape int64
    tensors in, bool out). A bool table of every (row, item) when it is small (one lookup per
    draw, and no per-pair copy of the sequences), else a comparison with the row's values."""
    if seen.shape[0] * num_item_rows <= _MEMBERSHIP_TABLE_MAX:
        table = torch.zeros(seen.shape[0], num_item_rows, dtype=torch.bool)  # (R, items)
        inside = seen.clamp(min=0).masked_fill(seen >= num_item_rows, 0)  # rows past the table are never drawn either
        table.scatter_(1, inside, True)  # rows 0/1 (padding/OOV) are never drawn
        return lambda row, item: table[row, item]
    # sum > 0, not any(): a bool any() over the last axis costs ~3x here
    return lambda row, item: (item.unsqueeze(-1) == seen[row]).sum(-1) > 0
