"""Scores every row of a data source and reports exact ranking metrics over all of them."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.evaluation.multi_task_metrics import multi_task_report
from recstack.evaluation.ranking_metrics import PredictionCollector, Predictions, ranking_report
from recstack.models.multi_task_base import is_funnel
from recstack.tasks.base import Task
from recstack.tasks.multi_task import MultiTaskTask


@torch.no_grad()
def collect_heads(model: nn.Module, task: Task, batches: Iterable[Batch], *, device: torch.device | str = "cpu") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]:
    """Every row's labels by target, scores by head (``task.predict_heads``) and group keys."""
    was_training = model.training
    model.eval()
    labels: dict[str, list[np.ndarray]] = {}
    heads: dict[str, list[np.ndarray]] = {}
    groups: list[np.ndarray] = []
    for batch in batches:
        for name, values in task.predict_heads(model, batch.to(device)).items():
            heads.setdefault(name, []).append(values.float().cpu().numpy())
        for name, values in batch.labels.items():
            labels.setdefault(name, []).append(values.numpy())
        if batch.group is not None:
            groups.append(np.asarray(batch.group))
    model.train(was_training)
    joined = {name: np.concatenate(parts) for name, parts in labels.items()}
    return joined, {name: np.concatenate(parts) for name, parts in heads.items()}, (np.concatenate(groups) if groups else None)


@torch.no_grad()
def collect_predictions(model: nn.Module, task: Task, batches: Iterable[Batch], *, device: torch.device | str = "cpu") -> Predictions:
    """Labels, predicted probabilities and group keys of every row, in order."""
    was_training = model.training
    model.eval()
    collector = PredictionCollector()
    for batch in batches:
        probs = task.predict(model, batch.to(device)).float().cpu().numpy()
        labels = batch.label.numpy() if batch.label is not None else np.full(len(probs), np.nan, np.float32)
        collector.append(labels, probs, batch.group)
    model.train(was_training)
    return collector.predictions()


def evaluate_ranking(model: nn.Module, task: Task, batches: Iterable[Batch], *, device: torch.device | str = "cpu") -> dict[str, float]:
    """AUC, GAUC (when the batches carry groups), log loss and accuracy over the whole set; a
    multi-task task's metrics per target (``click_auc`` ..., ``evaluation.multi_task_metrics``)."""
    if isinstance(task, MultiTaskTask):
        labels, heads, groups = collect_heads(model, task, batches, device=device)
        return multi_task_report(task.targets, labels, heads, groups, task.params.weighted_metric, funnel=is_funnel(model))
    predictions = collect_predictions(model, task, batches, device=device)
    return ranking_report(predictions.labels, predictions.probs, predictions.groups)
