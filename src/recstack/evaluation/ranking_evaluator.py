"""Scores every row of a data source and reports exact ranking metrics over all of them."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.evaluation.ranking_metrics import PredictionCollector, Predictions, ranking_report
from recstack.tasks.base import Task


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
    """AUC, GAUC (when the batches carry groups), log loss and accuracy over the whole set."""
    predictions = collect_predictions(model, task, batches, device=device)
    return ranking_report(predictions.labels, predictions.probs, predictions.groups)
