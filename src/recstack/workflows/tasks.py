"""Which task trains a run and how its splits are evaluated, from the config's ``task`` section."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from recstack.config import RunConfig, TaskType
from recstack.data.bad_rows import skipped_rows
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.evaluation.progress import progress_batches
from recstack.evaluation.ranking_evaluator import evaluate_ranking
from recstack.tasks import RegisteredTask, Task, TaskSpec, build_task as build_task_from_spec
from recstack.training.config import TrainerConfig

EVAL_BATCH_SIZE = 4096


def build_task(config: RunConfig, model: nn.Module, preprocessor: Preprocessor) -> Task:
    """The run's task, built from its parsed spec (``config.task.spec``) by
    :func:`recstack.tasks.build_task`; a retrieval task also gets the model's item-id feature and
    the training split's item frequencies (:func:`~recstack.workflows.retrieval.build_retrieval_task`).
    Save ``task.spec``: it rebuilds the same task."""
    if config.task.type is TaskType.BINARY:
        return build_task_from_spec(config.task.spec)
    from recstack.workflows.retrieval import build_retrieval_task

    return build_retrieval_task(config, model, preprocessor)


def saved_task_spec(task: Task, config: RunConfig) -> TaskSpec:
    """What ``model.json`` stores under ``task``: the built task's own spec (with what building
    resolved, such as the item-id feature), or the config's."""
    return task.spec if isinstance(task, RegisteredTask) else config.task.spec


def make_evaluator(config: RunConfig, task: Task, preprocessor: Preprocessor, *, split: str) -> Callable[[nn.Module], dict[str, float]]:
    source: DataSource = getattr(config.data, split)
    if config.task.type is TaskType.BINARY or _labelled_retrieval(config):
        progress = TrainerConfig.from_dict(config.trainer).progress  # the training bar's switch
        return lambda model: evaluate_source(model, task, preprocessor, source, progress=progress, desc=f"evaluate {split}")
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
) -> dict[str, float]:
    """Exact ranking metrics over every row of ``source`` (file order; with several ranks, each
    scores its shard and the metrics are computed on the gathered union).

    ``progress``: a bar counting the rows scored, with the total and ETA when the source knows
    its row count (Parquet); off by itself when stderr is not a terminal, and under several ranks.
    """
    from recstack.workflows.distributed import evaluate_sharded, is_distributed

    if is_distributed():
        return evaluate_sharded(model, task, preprocessor, source, batch_size=EVAL_BATCH_SIZE)
    stream = BatchStream(
        source=source, preprocessor=preprocessor, config=LoaderConfig(batch_size=EVAL_BATCH_SIZE), rank=0, world_size=1
    )
    device = next(model.parameters()).device
    before = skipped_rows(preprocessor, source)
    batches = progress_batches(stream, total_rows=source.num_rows(), desc=desc, enabled=progress)
    metrics = evaluate_ranking(model, task, batches, device=device)
    if source.skip_bad_rows:  # rows the metrics leave out, so the reader of metrics.json knows
        metrics["skipped_bad_rows"] = skipped_rows(preprocessor, source) - before
    return metrics
