"""Which task trains a run and how its splits are evaluated, from the config's ``task`` section."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from recstack.config import RunConfig, TaskType
from recstack.data.bad_rows import skipped_rows
from recstack.errors import ConfigError
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema
from recstack.evaluation.progress import progress_batches
from recstack.evaluation.ranking_evaluator import evaluate_ranking
from recstack.tasks import RegisteredTask, Task, TaskSpec, build_task as build_task_from_spec
from recstack.tasks.multi_task import MultiTaskTask
from recstack.training.config import TrainerConfig

EVAL_BATCH_SIZE = 4096


def build_task(config: RunConfig, model: nn.Module, preprocessor: Preprocessor) -> Task:
    """The run's task, built from its parsed spec (``config.task.spec``) by
    :func:`recstack.tasks.build_task`; a retrieval task also gets the model's item-id feature and
    the training split's item frequencies (:func:`~recstack.workflows.retrieval.build_retrieval_task`).
    Save ``task.spec``: it rebuilds the same task."""
    if config.task.type is TaskType.BINARY:
        task = build_task_from_spec(config.task.spec)
        if isinstance(task, MultiTaskTask):  # the schema's targets, saved in the spec; the model scores them
            task = task.with_schema_targets(preprocessor.schema.targets)
            task.check_model(model)
        return task
    from recstack.workflows.retrieval import build_retrieval_task

    return build_retrieval_task(config, model, preprocessor)


def multi_task_model_params(config: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    """A multi-task model's params with ``targets`` and ``loss_weighting`` filled in (unless the
    config gives them): the task's targets when its config names them, else the schema's; the
    task's loss weighting (the model holds learned weights for ``uncertainty``)."""
    from recstack.models.multi_task_base import is_multi_task_model
    from recstack.models.registry import model_class
    from recstack.nn.task_uncertainty import LossWeighting

    if not is_multi_task_model(model_class(config.model.name)):
        return params
    filled = dict(params)
    if "targets" not in filled:
        spec_targets = getattr(config.task.spec.params, "targets", ())
        filled["targets"] = [t.name for t in spec_targets] or [t.name for t in config.schema.targets]
    weighting = getattr(config.task.spec.params, "loss_weighting", LossWeighting.FIXED)
    if "loss_weighting" not in filled and weighting is not LossWeighting.FIXED:  # fixed: the model's default
        filled["loss_weighting"] = weighting.value
    return filled


def check_multi_task_config(config: RunConfig, model_params: dict[str, Any], trainer: TrainerConfig) -> None:
    """Before any data is read: a multi-task model trains with the ``multi_task`` task and the
    other way round, and ``trainer.monitor`` names a metric the task reports (ConfigError)."""
    from recstack.models.multi_task_base import is_multi_task_model
    from recstack.models.registry import model_class

    multi_model = is_multi_task_model(model_class(config.model.name))
    multi_task = config.task.name == "multi_task"
    if multi_model != multi_task:
        raise ConfigError(
            f"task.type: model {config.model.name!r} "
            + ("scores several targets and trains with task: {type: multi_task}" if multi_model else "scores one target; the multi_task task needs a multi-task model (shared_bottom, esmm, mmoe, ple, aitm)")
            + f", got task {config.task.name!r}"
        )
    if not multi_task:
        return
    task = build_task_from_spec(config.task.spec).with_schema_targets(config.schema.targets)
    if tuple(model_params.get("targets", ())) != task.target_names:
        raise ConfigError(f"model.params.targets: {list(model_params.get('targets', ()))} differ from the task's targets {list(task.target_names)}")
    weighting = task.params.loss_weighting.value
    given = model_params.get("loss_weighting", weighting)
    if getattr(given, "value", given) != weighting:
        raise ConfigError(f"model.params.loss_weighting: {model_params['loss_weighting']!r} differs from task.loss_weighting {weighting!r} "
                          "(leave it out of model.params: recstack train fills it in from the task)")  # fmt: skip
    if trainer.monitor not in task.metric_names():
        raise ConfigError(f"trainer.monitor: {trainer.monitor!r} is not reported by this multi-task run; one of {task.metric_names()}")


def saved_task_spec(task: Task, config: RunConfig) -> TaskSpec:
    """What ``model.json`` stores under ``task``: the built task's own spec (with what building
    resolved, such as the item-id feature), or the config's."""
    return task.spec if isinstance(task, RegisteredTask) else config.task.spec


def features_read(config: RunConfig, model: nn.Module, model_params: dict[str, Any]) -> tuple[str, ...] | None:
    """The features a run's streams transform (schema order): those a ranking model's params name
    (``ModelParams.features_read``), so a schema declaring many features trains a model on a few
    without reading the rest; None (every feature) for retrieval models, whose tasks and
    evaluators read item and history features the params need not name, and where bad rows are
    dropped (a bad value in an unread column must drop its row as it does in the fit)."""
    return model_features_read(config.model.name, model_params, model, config.schema, config.data.train)


def model_features_read(
    model_name: str, model_params: Mapping[str, Any], model: nn.Module, schema: Schema, source: DataSource
) -> tuple[str, ...] | None:
    """:func:`features_read` for a model read from ``source`` (training, or a saved run scoring
    a file: ``recstack predict`` / ``evaluate``)."""
    from recstack.models.registry import model_class
    from recstack.models.retrieval_contract import is_retrieval_model
    from recstack.schema.enums import InvalidPolicy

    drops_rows = source.skip_bad_rows or any(getattr(f, "on_invalid", None) is InvalidPolicy.SKIP_ROW for f in schema.features)
    if is_retrieval_model(model) or drops_rows:
        return None
    named = model_class(model_name).Params.from_dict(dict(model_params)).features_read()  # type: ignore[attr-defined]
    if named is None:
        return None
    return tuple(name for name in schema.names if name in named)


def make_evaluator(
    config: RunConfig, task: Task, preprocessor: Preprocessor, *, split: str, features: tuple[str, ...] | None = None
) -> Callable[[nn.Module], dict[str, float]]:
    """Metrics of a model on one split; ``features``: transform only these (:func:`features_read`)."""
    source: DataSource = getattr(config.data, split)
    if config.task.type is TaskType.BINARY or _labelled_retrieval(config):
        progress = TrainerConfig.from_dict(config.trainer).progress  # the training bar's switch
        return lambda model: evaluate_source(model, task, preprocessor, source, progress=progress, desc=f"evaluate {split}", features=features)
    from recstack.workflows.retrieval import make_retrieval_evaluator

    return make_retrieval_evaluator(config, preprocessor, split=split)


def _labelled_retrieval(config: RunConfig) -> bool:
    """A pointwise two-tower run without a catalogue (seeds 000/001: labelled (user, item, click)
    rows) is scored row by row, AUC/logloss over the task's ``predict``, like a ranking run."""
    return config.data.catalog is None and config.task.name == "pointwise"


def evaluate_source(
    model: nn.Module,
    task: Task,
    preprocessor: Preprocessor,
    source: DataSource,
    *,
    progress: bool = True,
    desc: str = "evaluate",
    features: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Exact ranking metrics over every row of ``source`` (file order; with several ranks, each
    scores its shard and the metrics are computed on the gathered union).

    ``progress``: a bar counting the rows scored, with the total and ETA when the source knows
    its row count (Parquet); off by itself when stderr is not a terminal, and under several ranks.
    ``features``: transform only these (the model's, :func:`features_read`); None: every one.
    """
    from recstack.workflows.distributed import evaluate_sharded, is_distributed

    if is_distributed():
        return evaluate_sharded(model, task, preprocessor, source, batch_size=EVAL_BATCH_SIZE)
    stream = BatchStream(
        source=source, preprocessor=preprocessor, config=LoaderConfig(batch_size=EVAL_BATCH_SIZE), rank=0, world_size=1, features=features
    )
    device = next(model.parameters()).device
    before = skipped_rows(preprocessor, source)
    batches = progress_batches(stream, total_rows=source.num_rows(), desc=desc, enabled=progress)
    metrics = evaluate_ranking(model, task, batches, device=device)
    if source.skip_bad_rows:  # rows the metrics leave out, so the reader of metrics.json knows
        metrics["skipped_bad_rows"] = skipped_rows(preprocessor, source) - before
    return metrics
