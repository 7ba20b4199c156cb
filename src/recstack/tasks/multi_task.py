"""Several targets at once: a weighted sum of per-target losses over a model's per-target logits.

A multi-task ranker returns ``{target: logits (B,)}`` (``models/multi_task_base.py``). For each
target the task computes binary cross-entropy (binary) or squared error (regression) and sums
them with the targets' weights::

    loss = sum_k weight_k * mean_rows(loss_k) (+ the model's own penalty, if Regularized)

With ``loss_weighting: uncertainty`` the weights are learned (Kendall et al. 2018,
``nn/task_uncertainty.py``): ``sum_k c_k weight_k exp(-s_k) loss_k + s_k / 2``, one learned
log-variance ``s_k`` per target held by the model (``c_k``: 1 binary, 1/2 regression). With
``loss_weighting: gradnorm`` (Chen et al. 2018, ``nn/gradnorm.py``) the weights balance each
target's gradient norm on the model's last shared layer against its training rate
(``gradnorm_alpha``). With ``loss_weighting: metabalance`` (He et al. 2022,
``nn/metabalance.py``) the weights stay fixed and each auxiliary target's gradient on every
tensor it shares with others is rescaled towards the main target's magnitude
(``metabalance_main``, ``metabalance_relax_factor``, ``metabalance_beta``,
``metabalance_strategy``). A model with ``output_penalty(logits)`` (AITM's behavioural expectation
calibrator) has it added.

A target with a ``condition`` (``like`` given ``click``) is defined only where the condition
target is 1. Two ways to train it (``conditioned_loss``):

* ``masked``: its loss is averaged over the batch's rows where the condition holds only; the
  model's logit is ``p(like | click)``.
* ``entire_space`` (ESMM, Ma et al. 2018, the default for a model with ``entire_space = True``):
  over every row, binary cross-entropy of ``p(click) * p(like | click)`` against
  ``click * like``; the conditional logit gets its gradient only through that product.

Either way a label of 1 where the condition is 0 is ignored by the loss (the evaluation counts
such rows as ``<target>_outside_condition_rows``).

Heads (``predict_heads``): every target's probability (regression: its value) and, for each
binary conditioned target, ``<condition>_and_<target>`` = ``p(condition) * p(target | condition)``
(ESMM's pCTCVR).

Shape legend: B batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.models.multi_task_base import is_funnel
from recstack.models.params import CheckedParams, require
from recstack.nn.gradnorm import GradNormWeights
from recstack.nn.metabalance import MetaBalance, MetaBalanceStrategy
from recstack.nn.task_uncertainty import LossWeighting, TaskUncertainty
from recstack.nn.torchrec_tables import TorchRecTables
from recstack.schema.targets import Target
from recstack.tasks.base import model_regularization
from recstack.tasks.registry import RegisteredTask, TaskParams, TaskType, register_task

__all__ = ["ConditionedLoss", "LossWeighting", "MetricWeight", "MultiTaskTask", "TargetParams", "joint_head"]

BINARY, REGRESSION = "binary", "regression"
WEIGHTED_METRIC = "weighted_metric"  # the key of the declared weighted sum in a run's metrics


class ConditionedLoss(str, Enum):
    """How a target with a condition is trained."""

    MASKED = "masked"  # on the rows where the condition holds
    ENTIRE_SPACE = "entire_space"  # ESMM: p(condition) * p(target | condition) over every row


@dataclass(frozen=True, kw_only=True)
class TargetParams(CheckedParams):
    """One target as the task sees it (the schema's :class:`~recstack.schema.targets.Target`)."""

    name: str
    kind: str = BINARY  # binary | regression ("real" is read as regression)
    weight: float = 1.0
    condition: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "real":
            object.__setattr__(self, "kind", REGRESSION)
        super().__post_init__()

    def validate(self) -> None:
        require(self.name != "", "name", "must name a target")
        require(self.kind in (BINARY, REGRESSION), "kind", f"must be 'binary' or 'regression', got {self.kind!r}")
        require(math.isfinite(self.weight) and self.weight > 0, "weight", f"must be a finite number > 0, got {self.weight}")

    @classmethod
    def of(cls, target: Target) -> "TargetParams":
        kind = BINARY if target.kind.value == BINARY else REGRESSION
        return cls(name=target.name, kind=kind, weight=target.weight, condition=target.condition)

    @property
    def binary(self) -> bool:
        return self.kind == BINARY


@dataclass(frozen=True, kw_only=True)
class MetricWeight(CheckedParams):
    """One term of the weighted metric a run may monitor: ``weight * <metric>``."""

    metric: str
    weight: float = 1.0

    def validate(self) -> None:
        require(math.isfinite(self.weight) and self.weight != 0, "weight", f"must be a finite non-zero number, got {self.weight}")


def joint_head(target: TargetParams) -> str:
    """The head of ``p(condition) * p(target | condition)``: ``click_and_like``."""
    return f"{target.condition}_and_{target.name}"


@register_task("multi_task")
class MultiTaskTask(RegisteredTask):
    """Weighted per-target losses over a multi-task ranker's ``{target: logits (B,)}``.

    Args:
        targets: the targets, in order; empty: the schema's (``recstack train`` fills them in,
            :meth:`with_schema_targets`), so the saved spec rebuilds the task alone.
        conditioned_loss: ``masked`` or ``entire_space`` for conditioned targets; None: the
            model's choice (``entire_space`` for ESMM, else ``masked``).
        weighted_metric: terms ``{metric, weight}`` of a validation metric reported as
            ``weighted_metric`` (``trainer.monitor: weighted_metric``), e.g. ``click_auc`` 0.5 and
            ``like_auc`` 0.5.
        loss_weighting: ``fixed`` (the targets' weights), ``uncertainty`` or ``gradnorm`` (learned:
            the model then has the same ``loss_weighting``, which ``recstack train`` fills in), or
            ``metabalance`` (the auxiliary targets' gradients on shared tensors rescaled towards
            the main target's; the model holds the norms' moving averages).
        gradnorm_alpha: GradNorm's restoring force (``loss_weighting: gradnorm``).
        metabalance_main: MetaBalance's main target (default: the first target).
        metabalance_relax_factor: MetaBalance's ``r`` in [0, 1]: 1 gives auxiliary gradients the
            main one's magnitude, 0 leaves them as they are.
        metabalance_beta: the decay of MetaBalance's moving averages of gradient norms, in [0, 1).
        metabalance_strategy: ``both`` (rescale every auxiliary gradient), ``shrink`` (only those
            larger than the main target's) or ``enlarge`` (only the smaller ones).

    Example:
        >>> class Zero(nn.Module):
        ...     def forward(self, batch):
        ...         return {"click": torch.zeros(len(batch)), "like": torch.zeros(len(batch))}
        >>> task = MultiTaskTask(targets=[TargetParams(name="click"), TargetParams(name="like", weight=0.5, condition="click")])
        >>> batch = Batch(dense={"x": torch.zeros(4, 1)}, labels={"click": torch.tensor([1.0, 1, 0, 0]), "like": torch.tensor([1.0, 0, 0, 0])})
        >>> round(task.loss(Zero(), batch).item(), 4)  # ln 2 + 0.5 ln 2 (like: the two clicked rows)
        1.0397
        >>> task.heads
        ('click', 'like', 'click_and_like')
    """

    family: ClassVar[TaskType] = TaskType.BINARY

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        """``task: {type: multi_task, conditioned_loss: masked, weighted_metric: [...], loss_weighting: fixed}``."""

        targets: tuple[TargetParams, ...] = ()
        conditioned_loss: ConditionedLoss | None = None
        weighted_metric: tuple[MetricWeight, ...] = ()
        loss_weighting: LossWeighting = LossWeighting.FIXED
        gradnorm_alpha: float = 1.5
        metabalance_main: str | None = None
        metabalance_relax_factor: float = 0.7
        metabalance_beta: float = 0.9
        metabalance_strategy: MetaBalanceStrategy = MetaBalanceStrategy.BOTH

        def validate(self) -> None:
            names = [t.name for t in self.targets]
            require(len(set(names)) == len(names), "targets", f"a target is named twice: {names}")
            alpha = self.gradnorm_alpha
            require(math.isfinite(alpha) and alpha >= 0, "gradnorm_alpha", f"must be a finite number >= 0, got {alpha}")
            relax, beta = self.metabalance_relax_factor, self.metabalance_beta
            require(0.0 <= relax <= 1.0, "metabalance_relax_factor", f"must be in [0, 1], got {relax}")
            require(0.0 <= beta < 1.0, "metabalance_beta", f"must be in [0, 1), got {beta}")
            main = self.metabalance_main
            require(main is None or not names or main in names, "metabalance_main", f"{main!r} is not a target (targets: {names})")
            by_name = {t.name: t for t in self.targets}
            for i, target in enumerate(self.targets):
                if target.condition is None:
                    continue
                given = by_name.get(target.condition)
                require(given is not None, f"targets[{i}].condition", f"{target.condition!r} is not a target (targets: {names})")
                require(given.binary and given.condition is None, f"targets[{i}].condition",
                        f"{target.condition!r} must be a binary target without a condition of its own")  # fmt: skip

        def options_but_targets(self) -> dict[str, Any]:
            """Every option but ``targets``, as keyword arguments of the task."""
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "targets"}

    def __init__(
        self,
        *,
        targets: Sequence[TargetParams] = (),
        conditioned_loss: ConditionedLoss | str | None = None,
        weighted_metric: Sequence[MetricWeight] = (),
        loss_weighting: LossWeighting | str = LossWeighting.FIXED,
        gradnorm_alpha: float = 1.5,
        metabalance_main: str | None = None,
        metabalance_relax_factor: float = 0.7,
        metabalance_beta: float = 0.9,
        metabalance_strategy: MetaBalanceStrategy | str = MetaBalanceStrategy.BOTH,
    ) -> None:
        self.params = self.Params(
            targets=tuple(targets), conditioned_loss=conditioned_loss, weighted_metric=tuple(weighted_metric),
            loss_weighting=LossWeighting(loss_weighting), gradnorm_alpha=gradnorm_alpha, metabalance_main=metabalance_main,
            metabalance_relax_factor=metabalance_relax_factor, metabalance_beta=metabalance_beta,
            metabalance_strategy=MetaBalanceStrategy(metabalance_strategy),
        )  # fmt: skip
        self.targets: tuple[TargetParams, ...] = self.params.targets
        # each target's factor on exp(-s_k) * loss_k under uncertainty weighting
        self._uncertainty_scales = [t.weight * (1.0 if t.binary else 0.5) for t in self.targets]

    @classmethod
    def from_params(cls, params: "MultiTaskTask.Params") -> "MultiTaskTask":
        return cls(targets=params.targets, **params.options_but_targets())

    def with_schema_targets(self, schema_targets: Sequence[Target]) -> "MultiTaskTask":
        """This task with its targets resolved against the schema's: all of them when the config
        named none, else the named ones, each of which must be a schema target with the schema's
        kind and condition (ConfigError: a restated target that dropped its condition would
        silently train ``like`` over every row). Only the weights may differ from the schema's."""
        declared = {t.name: TargetParams.of(t) for t in schema_targets}
        if not self.targets:
            targets = tuple(declared.values())
        else:
            for i, target in enumerate(self.targets):
                schema_target = declared.get(target.name)
                if schema_target is None:
                    raise ConfigError(f"task.targets: {target.name!r} is not one of the schema's targets ({', '.join(declared)})")
                for key in ("kind", "condition"):
                    ours, schemas = getattr(target, key), getattr(schema_target, key)
                    if ours != schemas:
                        raise ConfigError(
                            f"task.targets[{i}].{key}: the schema declares target {target.name!r} with {key} {schemas!r}, "
                            f"the task gives {ours!r}; restate it as the schema has it (only weight may differ), or change the schema"
                        )
            targets = self.targets
        if not targets:
            raise ConfigError("task: multi_task needs targets; the schema declares none (targets: [...])")
        return type(self)(targets=targets, **self.params.options_but_targets())

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    @property
    def heads(self) -> tuple[str, ...]:
        joints = tuple(joint_head(t) for t in self.targets if t.condition is not None and t.binary)
        return (*self.target_names, *joints)

    def metric_names(self) -> list[str]:
        """The validation metrics an evaluation of this task reports (``trainer.monitor`` names one)."""
        names = []
        for target in self.targets:
            names += [f"{target.name}_{m}" for m in (("auc", "gauc", "logloss", "accuracy") if target.binary else ("rmse", "mae"))]
            if target.condition is not None and target.binary:
                names += [f"{joint_head(target)}_{m}" for m in ("auc", "gauc", "logloss", "accuracy")]
        return names + ([WEIGHTED_METRIC] if self.params.weighted_metric else [])

    def check_model(self, model: nn.Module) -> None:
        """ConfigError unless ``model`` scores exactly this task's targets and, trained over the
        entire space, has every conditioned target's condition among them."""
        model_targets = tuple(getattr(model, "targets", ()))
        if model_targets != self.target_names:
            raise ConfigError(
                f"model.params.targets: the model scores {list(model_targets)} but the task trains {list(self.target_names)}"
            )
        if self._entire_space(model):  # ESMM, or task.conditioned_loss: entire_space
            conditioned = [t for t in self.targets if t.condition is not None]
            if not conditioned or any(not t.binary for t in conditioned):
                raise ConfigError(
                    f"task: training {type(model).__name__} over the entire space needs binary targets with a condition "
                    f"(e.g. targets: [click, {{name: like, condition: click}}]); targets: {list(self.target_names)}"
                )
        self._learned_weighting(model, error=ConfigError)
        if is_funnel(model):  # AITM: every step over every row
            for target in self.targets:
                if not target.binary or target.condition is not None:
                    raise ConfigError(
                        f"task.targets: {type(model).__name__} predicts each funnel step over every row (P(click and like), "
                        f"not P(like | click)); target {target.name!r} is "
                        + (f"{target.kind}" if not target.binary else f"conditioned on {target.condition!r}")
                        + ": declare binary targets without a condition, the later step's label 0 where the earlier one is 0 "
                        "(schemas/movielens_multitask_funnel.yaml)"
                    )  # fmt: skip
        if getattr(model, "entire_space", False) and self.params.conditioned_loss is ConditionedLoss.MASKED:
            raise ConfigError(
                f"task.conditioned_loss: {type(model).__name__} trains its conditioned target only through "
                "p(condition) * p(target | condition) over every row; masked contradicts it"
            )

    def _entire_space(self, model: nn.Module) -> bool:
        if self.params.conditioned_loss is not None:
            return self.params.conditioned_loss is ConditionedLoss.ENTIRE_SPACE
        inner = getattr(model, "module", model)  # DDP wraps the model
        return bool(getattr(inner, "entire_space", False))

    def target_losses(self, logits: dict[str, Tensor], batch: Batch, *, entire_space: bool) -> dict[str, Tensor]:
        """Each target's scalar loss (before its weight)."""
        losses = {}
        for target in self.targets:
            if target.name not in logits:
                raise ValueError(f"the model returned {sorted(logits)}, not target {target.name!r}")
            if target.name not in batch.labels:
                raise ValueError(f"the batch has labels {sorted(batch.labels)}, not target {target.name!r}")
            z = logits[target.name].float()  # (B,)
            y = batch.labels[target.name].to(z.dtype)  # (B,)
            if target.condition is None:
                losses[target.name] = _per_row_loss(z, y, target).mean()
                continue
            given = batch.labels[target.condition].to(z.dtype)  # (B,) 0/1
            if entire_space and target.binary:
                losses[target.name] = _entire_space_loss(logits[target.condition].float(), z, given * y)
            else:
                rows = given  # the loss of rows where the condition holds, averaged over them
                losses[target.name] = (_per_row_loss(z, y, target) * rows).sum() / rows.sum().clamp_min(1.0)
        return losses

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = _logit_dict(model(batch))
        losses = self.target_losses(logits, batch, entire_space=self._entire_space(model))
        learned = self._learned_weighting(model)
        if learned is None:
            total = sum(target.weight * losses[target.name] for target in self.targets)
        elif isinstance(learned, TaskUncertainty):
            total = learned.combine([losses[t.name] for t in self.targets], self._uncertainty_scales)
        elif isinstance(learned, GradNormWeights):  # on the model's last shared layer
            inner = getattr(model, "module", model)
            # TorchRec's tables train inside the backward through the graph: keep that backward
            fused = any(isinstance(module, TorchRecTables) for module in inner.modules())
            parameters = None if fused else _trainable(inner)
            total = learned.combine([t.weight * losses[t.name] for t in self.targets], parameters, inner.shared_layer(), self.params.gradnorm_alpha)
        else:  # MetaBalance, on every tensor two or more targets reach
            parameters = _trainable(getattr(model, "module", model))
            total = learned.combine([t.weight * losses[t.name] for t in self.targets], parameters, main=self._main_index(),
                                    relax_factor=self.params.metabalance_relax_factor, beta=self.params.metabalance_beta,
                                    strategy=self.params.metabalance_strategy)  # fmt: skip
        penalty = getattr(getattr(model, "module", model), "output_penalty", None)
        if penalty is not None:  # a penalty on the model's own outputs (AITM's calibrator)
            value = penalty(logits)
            if value is not None:
                total = total + value
        regularized = model_regularization(model)
        if regularized is not None:
            total = total + regularized.regularization(batch)
        return total  # type: ignore[return-value]

    def _main_index(self) -> int:
        main = self.params.metabalance_main
        return 0 if main is None else self.target_names.index(main)

    def _learned_weighting(self, model: nn.Module, *, error: type[Exception] = ValueError) -> TaskUncertainty | GradNormWeights | MetaBalance | None:
        """The model's learned task weights for this task's ``loss_weighting`` (None: fixed);
        ``error`` when the model's ``loss_weighting`` differs from the task's."""
        inner = getattr(model, "module", model)  # DDP wraps the model
        held = {
            LossWeighting.UNCERTAINTY: getattr(inner, "task_uncertainty", None),
            LossWeighting.GRADNORM: getattr(inner, "task_gradnorm", None),
            LossWeighting.METABALANCE: getattr(inner, "task_metabalance", None),
        }
        wanted = self.params.loss_weighting
        for kind, found in held.items():
            if (kind is wanted) != (found is not None):
                raise error(
                    f"model.params.loss_weighting: task.loss_weighting is {wanted.value!r} but the model "
                    + (f"has no learned task weights (build it with loss_weighting: {wanted.value})" if kind is wanted
                       else f"holds learned task weights that this loss would never train (loss_weighting: {kind.value})")
                )  # fmt: skip
        return held.get(wanted)

    def loss_weights(self, model: nn.Module) -> dict[str, dict[str, float]] | None:
        """Learned task weights for ``metrics.json``: under uncertainty weighting each target's
        ``log_variance`` and effective ``weight`` (``c_k weight_k exp(-s_k)``); under GradNorm its
        ``weight`` (summing to the number of targets); under MetaBalance each target's
        ``gradient_scale`` (the median factor on its shared gradients, 1 for the main target);
        None for fixed weights."""
        learned = self._learned_weighting(model)
        if learned is None:
            return None
        if isinstance(learned, MetaBalance):
            return {name: {"gradient_scale": scale} for name, scale in learned.gradient_scales(self._main_index(), self.params.metabalance_relax_factor, self.params.metabalance_strategy).items()}
        if isinstance(learned, GradNormWeights):
            return {name: {"weight": weight} for name, weight in learned.normalized().items()}
        weights = learned.weights(self._uncertainty_scales)
        log_variances = learned.log_variance.detach().cpu().tolist()
        return {name: {"log_variance": s, "weight": weights[name]} for name, s in zip(self.target_names, log_variances)}

    def epoch_logs(self, model: nn.Module) -> dict[str, float]:
        """The learned loss weights (:meth:`loss_weights`) for the trainer's end-of-epoch record,
        flattened as ``loss_weight/<target>/<value>`` (TensorBoard ``train/loss_weight/...``)."""
        learned = self.loss_weights(model)
        if learned is None:
            return {}
        return {f"loss_weight/{target}/{key}": value for target, values in learned.items() for key, value in values.items()}

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        raise ValueError(f"the multi_task task has several heads ({', '.join(self.heads)}): read predict_heads")

    def predict_heads(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """``(B,)`` per head: probabilities of binary targets (a conditioned one's given its
        condition), values of regression targets, and each ``<condition>_and_<target>``."""
        return self.scores(_logit_dict(model(batch)))

    def scores(self, logits: dict[str, Tensor]) -> dict[str, Tensor]:
        """The heads from a model's ``{target: logits (B,)}`` (the exported ranker's outputs)."""
        scores = {t.name: torch.sigmoid(logits[t.name].float()) if t.binary else logits[t.name].float() for t in self.targets}
        for target in self.targets:
            if target.condition is not None and target.binary:
                scores[joint_head(target)] = scores[target.condition] * scores[target.name]  # pCTCVR <= pCTR
        return scores

    def __repr__(self) -> str:
        return (f"MultiTaskTask(targets={list(self.target_names)}, conditioned_loss={self.params.conditioned_loss}, "
                f"loss_weighting={self.params.loss_weighting.value})")  # fmt: skip


def _logit_dict(output: Any) -> dict[str, Tensor]:
    if not isinstance(output, dict):
        raise ValueError(f"the multi_task task needs a model returning {{target: logits}}, got {type(output).__name__}")
    return output


def _per_row_loss(logits: Tensor, labels: Tensor, target: TargetParams) -> Tensor:
    """``(B,)``: binary cross-entropy on logits, or the squared error of a regression target."""
    if target.binary:
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (logits - labels).square()


def _entire_space_loss(condition_logits: Tensor, target_logits: Tensor, joint_labels: Tensor) -> Tensor:
    """ESMM's pCTCVR loss: BCE of ``p = sigmoid(a) * sigmoid(b)`` against ``y_c * y_t``, on the
    logits, where neither factor underflows: with ``softplus(z) = log(1 + e^z)``,
    ``log p = a + b - softplus(a) - softplus(b)`` and, as ``1 - p = (1 + e^a + e^b) / ((1 + e^a)(1 + e^b))``,
    ``log(1 - p) = logsumexp(0, a, b) - softplus(a) - softplus(b)``; so the BCE of a row is
    ``softplus(a) + softplus(b) - y (a + b) - (1 - y) logsumexp(0, a, b)``, finite at any logits."""
    a, b, y = condition_logits, target_logits, joint_labels  # (B,) each
    either = torch.logsumexp(torch.stack((torch.zeros_like(a), a, b)), dim=0)  # log(1 + e^a + e^b)
    return (F.softplus(a) + F.softplus(b) - y * (a + b) - (1.0 - y) * either).mean()


def _trainable(model: nn.Module) -> list[Tensor]:
    """The model's trainable tensors, in ``parameters()`` order (the per-target gradients' order)."""
    return [p for p in model.parameters() if p.requires_grad]
