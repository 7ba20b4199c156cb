"""What every multi-task ranker shares: its targets, its feature part (the bottom's input) and
one tower per target.

A multi-task ranker's ``forward(batch)`` returns ``{target: logits (B,)}``, one entry per name of
``params.targets`` (the schema's targets, in order; ``recstack train`` fills them in when the
config leaves them out). The ``multi_task`` task turns them into losses and per-target scores.

Feature part: by default every model here reads its features the way the single-task rankers'
deep part does (``models/embedding_mlp.py``): each embedded feature (sequences pooled with their
pooling) and each dense feature, concatenated by ``SparseInputs.concat`` into one ``(B, N)``
vector. With ``feature_part: {name, params}`` it is a single-task ranker's vector before its
output module instead (``models/feature_part.py``: DIN's interests, DCN's crosses, ...). The
embedding tables are the schema's tables, shared by every task.

Shape legend: B batch, N concatenated input width, H tower width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.feature_part import FeaturePart, build_feature_part
from recstack.models.params import DeepParams, require, require_dims, select_features
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.mlp import MLP
from recstack.nn.gradnorm import GradNormWeights
from recstack.nn.metabalance import MetaBalance
from recstack.nn.task_uncertainty import LossWeighting, TaskUncertainty

__all__ = ["LOSS_WEIGHTING_STATE", "MultiTaskParams", "MultiTaskRanker", "is_funnel", "is_multi_task_model"]

# the attributes under which a ranker holds its loss weighting's state (one at most): training
# state rather than the model's function, so a warm start carries it only when the child has it too
LOSS_WEIGHTING_STATE = ("task_uncertainty", "task_gradnorm", "task_metabalance")


@dataclass(frozen=True, kw_only=True)
class MultiTaskParams(DeepParams):
    """Parameters every multi-task ranker has.

    Attributes:
        targets: the targets the model scores, in order (default: the schema's, filled in by
            ``recstack train``).
        tower_dims: each target's tower (an MLP ending in one logit).
        hidden_dims / activation / batch_norm / dropout: the shared part (its meaning is the
            model's: the shared bottom, or each expert).
        feature_part: a single-task ranker whose vector before its output module is the
            model's input (``{name: din, params: {...}}``); None: the concatenated embeddings.
            Its params then hold the features and embedding settings.
        loss_weighting: ``uncertainty``: the model owns one learned log-variance per target
            (``task_uncertainty``, ``nn/task_uncertainty.py``) that the ``multi_task`` loss weighs
            the targets by; ``gradnorm``: one GradNorm weight per target (``task_gradnorm``,
            ``nn/gradnorm.py``), balanced on :meth:`MultiTaskRanker.shared_layer`;
            ``metabalance``: the moving averages of MetaBalance's gradient norms
            (``task_metabalance``, ``nn/metabalance.py``); ``fixed``: none. ``recstack train``
            fills it in from ``task.loss_weighting``.
    """

    targets: tuple[str, ...] = ()
    tower_dims: tuple[int, ...] = (64,)
    feature_part: FeaturePart | None = None
    loss_weighting: LossWeighting = LossWeighting.FIXED

    def validate(self) -> None:
        super().validate()
        require_dims("tower_dims", self.tower_dims, allow_empty=True)
        require(len(set(self.targets)) == len(self.targets), "targets", f"a target is named twice: {list(self.targets)}")
        if self.feature_part is not None:
            for name in ("features", "sparse_embeddings", "embedding_init_std"):
                default = type(self).__dataclass_fields__[name].default
                require(
                    getattr(self, name) == default, name,
                    f"the feature part ({self.feature_part.name}) embeds the features: set {name} in feature_part.params",
                )  # fmt: skip

    def features_read(self) -> frozenset[str] | None:
        if self.feature_part is None:
            return super().features_read()
        return self.feature_part.ranker_params().features_read()

    def tower(self, in_dim: int) -> MLP:
        """One target's tower: ``tower_dims`` then a logit."""
        return MLP(in_dim=in_dim, hidden_dims=self.tower_dims, activation=self.activation,
                   batch_norm=self.batch_norm, dropout=self.dropout, head_dim=1)  # fmt: skip


class MultiTaskRanker(nn.Module):
    """Base of the multi-task rankers: the feature part and the towers; a subclass computes each
    target's tower input in :meth:`tower_inputs`.

    ``entire_space`` (ESMM): the model scores a conditioned target as ``p(target | condition)``
    and is trained only through ``p(condition) * p(target | condition)`` over every row.
    """

    entire_space: ClassVar[bool] = False
    min_targets: ClassVar[int] = 1
    model_name: ClassVar[str] = "multi-task"

    def __init__(self, *, feature_map: FeatureMap, params: MultiTaskParams) -> None:
        super().__init__()
        self.params = params
        require(len(params.targets) >= self.min_targets, "targets",
                f"{self.model_name} needs at least {self.min_targets} target(s), got {list(params.targets)} "
                "(declare them in the schema's targets:)")  # fmt: skip
        self.targets = tuple(params.targets)
        if params.feature_part is not None:
            self.feature_part = build_feature_part(params.feature_part, feature_map)
            self.input_dim = self.feature_part.head_input_dim
        else:
            self.feature_part = None
            self.inputs = select_features(feature_map, params.features).all
            self.embeddings = build_sparse_inputs(feature_map, features=self.inputs, sparse=params.sparse_embeddings, init_std=params.embedding_init_std)
            self.input_dim = self.embeddings.output_dim(self.inputs)
        if params.loss_weighting is LossWeighting.UNCERTAINTY:  # trained, saved and synced as any weight
            self.task_uncertainty = TaskUncertainty(self.targets)
        elif params.loss_weighting is LossWeighting.GRADNORM:
            self.task_gradnorm = GradNormWeights(self.targets)
        elif params.loss_weighting is LossWeighting.METABALANCE:
            require(len(self.targets) >= 2, "targets", f"loss_weighting: metabalance needs a main and an auxiliary target, got {list(self.targets)}")
            self.task_metabalance = MetaBalance(self.targets)

    def build_towers(self, in_dim: int) -> None:
        """One tower per target (``towers[target]``), each reading ``in_dim`` values."""
        self.towers = nn.ModuleDict({name: self.params.tower(in_dim) for name in self.targets})

    def features(self, batch: Batch) -> Tensor:
        """``(B, N)``: the feature part's vector, or the features embedded, pooled and concatenated."""
        if self.feature_part is not None:
            return self.feature_part.head_input(batch)
        return self.embeddings.concat(batch, self.inputs)

    def shared_layer(self) -> list[Tensor]:
        """The parameters of the last layer every target shares, whose gradient norms GradNorm
        balances: here the feature part's parameters, or the embedding tables (ESMM, AITM share
        nothing else); models with a shared network override it with its last layer."""
        part = self.feature_part if self.feature_part is not None else self.embeddings
        return [p for p in part.parameters() if p.requires_grad]

    def regularization(self, batch: Batch) -> Tensor:
        """The feature part's own penalty on ``batch`` (DIEN's auxiliary loss, DIN's L2), else 0."""
        penalty = getattr(self.feature_part, "regularization", None)
        if penalty is None:
            return torch.zeros((), device=self.towers[self.targets[0]].head.weight.device)
        return penalty(batch)

    def tower_inputs(self, features: Tensor) -> Sequence[Tensor]:  # pragma: no cover - abstract
        """One ``(B, H)`` per target, in the order of ``targets``."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{target: logits (B,)}``."""
        inputs = self.tower_inputs(self.features(batch))
        return {name: self.towers[name](x).squeeze(-1) for name, x in zip(self.targets, inputs)}


def is_multi_task_model(cls: type) -> bool:
    """Whether the model class scores several targets (its Params are :class:`MultiTaskParams`)."""
    params = getattr(cls, "Params", None)
    return isinstance(params, type) and issubclass(params, MultiTaskParams)


def is_funnel(model: nn.Module) -> bool:
    """Whether ``model`` (or the module a DDP / sharded wrapper holds) predicts a funnel's steps,
    each over every row (AITM): its targets carry no condition, its last step is ``P(every step)``."""
    return bool(getattr(getattr(model, "module", model), "funnel", False))
