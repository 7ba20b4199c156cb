"""AITM: Adaptive Information Transfer Multi-task (Xi et al., KDD 2021), for conversion funnels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.multi_task_base import MultiTaskParams, MultiTaskRanker
from recstack.models.params import require
from recstack.models.registry import register_model
from recstack.nn.mlp import MLP

__all__ = ["AITM", "InformationTransfer"]


class InformationTransfer(nn.Module):
    """The AIT module (eq. 4-5 of the paper): how much of the previous step's transferred
    information ``p`` and of this step's own representation ``q`` make its output.

    ``z = sum_{u in (p, q)} w_u h3(u)`` with ``w_u = softmax_u(<h1(u), h2(u)> / sqrt(d))`` and
    ``h1``, ``h2``, ``h3`` bias-free linear maps. (The authors' PyTorch code scores ``<h1(u),
    h3(u)>``; this follows the paper, as torch-rechub does.)

    Example:
        >>> ait = InformationTransfer(8)
        >>> ait(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)  # h1
        self.key = nn.Linear(dim, dim, bias=False)  # h2
        self.value = nn.Linear(dim, dim, bias=False)  # h3
        self.scale = 1.0 / math.sqrt(dim)

    def weights(self, transferred: Tensor, own: Tensor) -> Tensor:
        """``(B, 2)``: the weights of ``(p, q)``; each row sums to 1."""
        return self._weights(torch.stack([transferred, own], dim=1))

    def forward(self, transferred: Tensor, own: Tensor) -> Tensor:
        """``transferred`` p (B, d), ``own`` q (B, d) -> z (B, d)."""
        stacked = torch.stack([transferred, own], dim=1)  # (B, 2, d)
        return (self._weights(stacked).unsqueeze(-1) * self.value(stacked)).sum(dim=1)  # (B, d)

    def _weights(self, stacked: Tensor) -> Tensor:
        return torch.softmax((self.query(stacked) * self.key(stacked)).sum(-1) * self.scale, dim=-1)  # (B, 2)


@register_model("aitm")
class AITM(MultiTaskRanker):
    """A conversion funnel's steps in order (impression -> click -> like / purchase ...), each
    predicted over every row as ``P(step t)``, each step reading what the step before it learned.

    Per target t: a tower ``q_t`` (``hidden_dims``, ReLU) over the shared embeddings; for t > 1
    the previous step's output ``z_{t-1}`` passes through an info MLP ``p_{t-1} = g(z_{t-1})``
    (one ReLU layer of the towers' width) and the AIT module mixes it with ``q_t``:
    ``z_t = AIT(p_{t-1}, q_t)`` (``z_1 = q_1``); the target's head (``tower_dims``, then a logit)
    reads ``z_t``. Information flows one way: a later step never changes an earlier one's score.

    Training adds the paper's behavioural expectation calibrator (eq. 8), ``calibration_weight``
    times the mean over rows of ``sum_t max(p_t - p_{t-1}, 0)``: a later funnel step is
    penalised for being more probable than the step before it (the authors use 0.6; their
    PyTorch code sums the term over the batch instead of averaging it, which at its batch of 2,000
    weighs it 2,000x more against the cross-entropies). The ``multi_task`` task adds it
    (:meth:`output_penalty`).

    Targets: binary, in funnel order, without ``condition`` (the model predicts ``P(click and
    like)``, not ``P(like | click)``: declare the later step's label as 0 where the earlier one is
    0, as ``schemas/movielens_multitask_funnel.yaml`` does). The ``multi_task`` task refuses a
    conditioned target (ConfigError naming it).

    Example::

        model = build_model("aitm", feature_map, {"targets": ["click", "like"]})
        model(batch)  # {"click": (B,), "like": (B,)} logits of P(click), P(click and like)
    """

    min_targets = 2
    model_name = "aitm"
    funnel: ClassVar[bool] = True  # every target is a funnel step over every row (no condition)

    @dataclass(frozen=True, kw_only=True)
    class Params(MultiTaskParams):
        """``hidden_dims``: each step's tower before the transfer (its last width is the
        transfer width); ``tower_dims``: each step's head after it (empty: a logit alone);
        ``calibration_weight``: the calibrator's weight (0 turns it off)."""

        hidden_dims: tuple[int, ...] = (128, 64)
        tower_dims: tuple[int, ...] = ()
        calibration_weight: float = 0.6

        def validate(self) -> None:
            super().validate()
            weight = self.calibration_weight
            require(math.isfinite(weight) and weight >= 0, "calibration_weight", f"must be a finite number >= 0, got {weight}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None) -> None:
        params = params or self.Params()
        super().__init__(feature_map=feature_map, params=params)
        self.step_towers = nn.ModuleList(params.mlp(self.input_dim) for _ in self.targets)  # q_t
        width = self.step_towers[0].out_dim
        later = len(self.targets) - 1
        self.transfers = nn.ModuleList(
            MLP(in_dim=width, hidden_dims=(width,), batch_norm=params.batch_norm, dropout=params.dropout) for _ in range(later)
        )  # g_{t-1}
        self.information = nn.ModuleList(InformationTransfer(width) for _ in range(later))
        self.build_towers(width)

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:
        own = [tower(features) for tower in self.step_towers]  # q_t, (B, d) each
        steps = [own[0]]  # z_1 = q_1
        for t in range(1, len(own)):
            steps.append(self.information[t - 1](self.transfers[t - 1](steps[-1]), own[t]))  # z_t
        return steps

    def transfer_weights(self, batch: Batch) -> list[Tensor]:
        """For each later step t, ``(B, 2)``: the AIT weights of ``(p_{t-1}, q_t)``."""
        features = self.features(batch)
        own = [tower(features) for tower in self.step_towers]
        steps, weights = [own[0]], []
        for t in range(1, len(own)):
            transferred = self.transfers[t - 1](steps[-1])
            weights.append(self.information[t - 1].weights(transferred, own[t]))
            steps.append(self.information[t - 1](transferred, own[t]))
        return weights

    def output_penalty(self, logits: dict[str, Tensor]) -> Tensor | None:
        """The calibrator: ``calibration_weight * mean_rows(sum_t relu(p_t - p_{t-1}))``; None at weight 0."""
        weight = self.params.calibration_weight
        if weight == 0:
            return None
        probabilities = [torch.sigmoid(logits[name].float()) for name in self.targets]  # (B,) each
        excess = sum(torch.relu(later - earlier) for earlier, later in zip(probabilities, probabilities[1:]))
        return weight * excess.mean()  # type: ignore[union-attr]
