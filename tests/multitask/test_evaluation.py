"""Per-target metrics: keys, conditioned rows, the joint head, counts, the weighted metric, plots."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.errors import ConfigError
from recstack.evaluation.multi_task_metrics import multi_task_report
from recstack.evaluation.ranking_metrics import auc, gauc
from recstack.tasks.multi_task import MetricWeight, TargetParams
from recstack.training.callbacks.metric_keys import display_name, is_metric

TARGETS = (TargetParams(name="click"), TargetParams(name="like", condition="click"), TargetParams(name="secs", kind="regression"))
rng = np.random.default_rng(0)
N = 200
CLICK = (rng.random(N) < 0.5).astype(np.float32)
CLICK[:5] = 0.0
LIKE = CLICK * (rng.random(N) < 0.5).astype(np.float32)
LIKE[:5] = 1.0  # five likes without a click: not scored, counted
SECS = rng.normal(size=N)
HEADS = {"click": rng.random(N), "like": rng.random(N), "secs": SECS + 0.5}
HEADS["click_and_like"] = HEADS["click"] * HEADS["like"]
GROUPS = rng.integers(0, 10, N)
LABELS = {"click": CLICK, "like": LIKE, "secs": SECS}


def test_each_target_has_its_own_metrics_on_its_own_rows() -> None:
    report = multi_task_report(TARGETS, LABELS, HEADS, GROUPS)
    clicked = CLICK == 1
    assert report["click_auc"] == pytest.approx(auc(CLICK, HEADS["click"]))
    assert report["like_auc"] == pytest.approx(auc(LIKE[clicked], HEADS["like"][clicked]))
    assert report["like_gauc"] == pytest.approx(gauc(LIKE[clicked], HEADS["like"][clicked], GROUPS[clicked]))
    assert report["like_count"] == clicked.sum() and report["click_count"] == N
    assert report["click_and_like_auc"] == pytest.approx(auc(CLICK * LIKE, HEADS["click_and_like"]))
    assert report["like_outside_condition_rows"] == 5
    assert report["secs_rmse"] == pytest.approx(0.5) and report["secs_mae"] == pytest.approx(0.5)
    assert {"click_logloss", "click_gauc", "like_logloss", "click_and_like_gauc"} <= set(report)


def test_the_weighted_metric_sums_the_declared_terms() -> None:
    terms = (MetricWeight(metric="click_auc", weight=0.25), MetricWeight(metric="like_auc", weight=0.75))
    report = multi_task_report(TARGETS, LABELS, HEADS, GROUPS, terms)
    assert report["weighted_metric"] == pytest.approx(0.25 * report["click_auc"] + 0.75 * report["like_auc"])
    with pytest.raises(ConfigError, match=r"task.weighted_metric: \['like_acu'\] are not reported"):
        multi_task_report(TARGETS, LABELS, HEADS, GROUPS, (MetricWeight(metric="like_acu"),))


def test_per_target_keys_are_metrics_or_bookkeeping_and_read_well() -> None:
    report = multi_task_report(TARGETS, LABELS, HEADS, GROUPS)
    metrics = sorted(k for k in report if is_metric(k))
    assert "click_auc" in metrics and "secs_rmse" in metrics
    assert not any(k.endswith(("_count", "_positive_rate", "_rows")) for k in metrics)
    assert display_name("eval_click_auc") == "click AUC" and display_name("eval_like_gauc") == "like GAUC (AUC per group)"
    assert display_name("secs_rmse") == "secs RMSE" and display_name("auc") == "AUC"
