"""Per-target metrics of a multi-task run, over the whole evaluation set.

Shape legend: B impressions (the whole set).

Keys are ``<head>_<metric>``: a binary target's AUC / GAUC / log loss / accuracy
(``click_auc``), a regression target's RMSE and MAE (``watch_seconds_rmse``), each with its
``_count`` (and ``_positive_rate``). A target with a condition is scored on the rows where the
condition holds (``like_auc``: p(like | click) among clicked rows) and, binary, its joint head over
every row (``click_and_like_auc``: pCTCVR against click·like, as ESMM's paper reports CTCVR AUC).
Labels of 1 where the condition is 0 are not scored; their number is
``<target>_outside_condition_rows``. A funnel model's targets (AITM: each step over every row,
the later step's label 0 where the earlier one is 0) count the rows breaking that order as
``<target>_above_<earlier>_rows`` (``like_above_click_rows``: like 1 where click is 0). With the
task's ``weighted_metric`` terms the report also holds ``weighted_metric = sum_k weight_k *
report[metric_k]``.

Example:
    >>> import numpy as np
    >>> from recstack.tasks.multi_task import TargetParams
    >>> targets = (TargetParams(name="click"), TargetParams(name="like", condition="click"))
    >>> labels = {"click": np.array([1.0, 1, 0, 0]), "like": np.array([1.0, 0, 0, 0])}
    >>> heads = {"click": np.array([0.9, 0.6, 0.2, 0.1]), "like": np.array([0.8, 0.3, 0.5, 0.5])}
    >>> heads["click_and_like"] = heads["click"] * heads["like"]
    >>> report = multi_task_report(targets, labels, heads)
    >>> report["click_auc"], report["like_auc"], report["like_count"], report["click_and_like_auc"]
    (1.0, 1.0, 2, 1.0)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from recstack.errors import ConfigError
from recstack.evaluation.ranking_metrics import ranking_report
from recstack.tasks.multi_task import WEIGHTED_METRIC, MetricWeight, TargetParams, joint_head

__all__ = ["multi_task_report", "regression_report"]


def regression_report(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """``{"rmse", "mae", "count"}`` of ``(B,)`` predictions."""
    errors = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)  # (B,)
    if not len(errors):
        return {"rmse": float("nan"), "mae": float("nan"), "count": 0}
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors))), "count": int(len(errors))}


def multi_task_report(
    targets: Sequence[TargetParams],
    labels: Mapping[str, np.ndarray],
    heads: Mapping[str, np.ndarray],
    groups: np.ndarray | None = None,
    weighted_metric: Sequence[MetricWeight] = (),
    funnel: bool = False,
) -> dict:
    """Every target's metrics (module docstring), flat: ``{"click_auc": ..., "like_rmse": ...}``;
    ``funnel``: the targets are a funnel's steps in order (count the rows breaking it)."""
    report: dict = {}
    if funnel:
        for earlier, later in zip(targets, targets[1:]):
            broken = (np.asarray(labels[later.name]) != 0) & (np.asarray(labels[earlier.name]) == 0)
            report[f"{later.name}_above_{earlier.name}_rows"] = int(np.count_nonzero(broken))
    for target in targets:
        y, score = np.asarray(labels[target.name]), np.asarray(heads[target.name])
        rows = np.ones(len(y), bool)
        if target.condition is not None:
            rows = np.asarray(labels[target.condition]) == 1
            report[f"{target.name}_outside_condition_rows"] = int(np.count_nonzero((y != 0) & ~rows))
        part = ranking_report(y[rows], score[rows], None if groups is None else groups[rows]) if target.binary \
            else regression_report(y[rows], score[rows])  # fmt: skip
        report.update({f"{target.name}_{key}": value for key, value in part.items()})
        if target.condition is not None and target.binary:
            joint = np.asarray(labels[target.condition]) * y  # (B,) click·like over every row
            part = ranking_report(joint, np.asarray(heads[joint_head(target)]), groups)
            report.update({f"{joint_head(target)}_{key}": value for key, value in part.items()})
    if weighted_metric:
        missing = [term.metric for term in weighted_metric if term.metric not in report]
        if missing:
            raise ConfigError(f"task.weighted_metric: {missing} are not reported; the evaluation reports {sorted(report)}")
        report[WEIGHTED_METRIC] = float(sum(term.weight * report[term.metric] for term in weighted_metric))
    return report
