"""AUC, GAUC, log loss and accuracy are exact over the whole set and agree with references."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recstack.evaluation.ranking_metrics import (
    PredictionCollector,
    accuracy,
    auc,
    gauc,
    logloss,
    ranking_report,
)


def naive_gauc(labels, scores, groups):
    """Reference: a Python loop over groups with sklearn's AUC (the loop lives only here)."""
    total, weight = 0.0, 0
    for key in set(groups.tolist()):
        in_group = groups == key
        if len(np.unique(labels[in_group])) < 2:
            continue
        total += in_group.sum() * roc_auc_score(labels[in_group], scores[in_group])
        weight += in_group.sum()
    return total / weight


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_tied_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=2000)
    scores = np.round(rng.random(2000) + 0.3 * labels, 1)  # one decimal: many ties
    assert len(np.unique(scores)) < 30
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_takes_tensors_and_float_labels():
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    probs = torch.tensor([[0.2], [0.7], [0.2], [0.1]])  # (B, 1) model output
    assert auc(labels, probs) == pytest.approx(roc_auc_score([0, 1, 1, 0], [0.2, 0.7, 0.2, 0.1]))


def test_auc_of_one_class_is_nan_and_non_binary_labels_are_rejected():
    assert math.isnan(auc(np.ones(5), np.arange(5.0)))
    with pytest.raises(ValueError, match="0/1"):
        auc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))


def test_gauc_matches_a_per_group_loop_with_string_keys_and_single_class_groups():
    rng = np.random.default_rng(0)
    size = 3000
    groups = rng.choice([f"user{i}" for i in range(150)], size=size)
    labels = rng.integers(0, 2, size=size)
    labels[groups == "user7"] = 1  # single-class groups: skipped by both
    labels[groups == "user8"] = 0
    scores = np.round(rng.random(size) + 0.2 * labels, 2)  # ties inside groups
    assert gauc(labels, scores, groups) == pytest.approx(naive_gauc(labels, scores, groups), abs=1e-12)


def test_gauc_with_int_keys_skips_single_class_groups_entirely():
    labels = np.array([1, 0, 1, 1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.6, 0.6, 0.2, 0.8])
    groups = np.array([10, 10, 20, 20, 30, 30, 40, 40])
    # group 20 is all positive: out of the sum and of the weights; 30 ties (0.5); 40 is wrong
    assert gauc(labels, scores, groups) == pytest.approx((2 * 1.0 + 2 * 0.5 + 2 * 0.0) / 6)
    assert gauc(labels, scores, groups) == pytest.approx(naive_gauc(labels, scores, groups))


def test_gauc_weights_groups_by_impressions():
    labels = np.array([1, 0, 0, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.8, 0.9, 0.1, 0.2])
    groups = np.array(["a", "a", "b", "b", "b", "b"])  # a: AUC 1 on 2; b: AUC 0 on 4
    assert gauc(labels, scores, groups) == pytest.approx(2 / 6)


def test_gauc_is_nan_when_no_group_has_both_classes():
    assert math.isnan(gauc(np.array([1, 0]), np.array([0.3, 0.4]), np.array(["a", "b"])))


def test_logloss_clips_confident_mistakes_and_matches_sklearn_elsewhere():
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.9, 0.2, 0.6, 0.3])
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs))
    eps = 1e-7
    assert logloss(np.array([1]), np.array([0.0]), eps=eps) == pytest.approx(-math.log(eps))
    assert logloss(np.array([0]), np.array([1.0]), eps=eps) == pytest.approx(-math.log(eps), rel=1e-6)
    assert logloss(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(-math.log1p(-eps))


def test_accuracy_thresholds_probabilities():
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.7, 0.5, 0.4, 0.1])  # 0.5 is not above the threshold: predicted 0
    assert accuracy(labels, probs) == pytest.approx(0.75)
    assert accuracy(labels, probs, threshold=0.3) == pytest.approx(0.75)


def test_ranking_report_has_every_metric_and_gauc_only_with_groups():
    labels = np.array([1, 0, 1, 0, 1])
    probs = np.array([0.8, 0.3, 0.6, 0.7, 0.9])
    report = ranking_report(labels, probs)
    assert set(report) == {"auc", "logloss", "accuracy", "count", "positive_rate"}
    assert report["count"] == 5 and report["positive_rate"] == pytest.approx(0.6)
    assert report["auc"] == pytest.approx(roc_auc_score(labels, probs))
    grouped = ranking_report(labels, probs, groups=np.array([1, 1, 2, 2, 2]))
    assert grouped["gauc"] == pytest.approx(naive_gauc(labels, probs, np.array([1, 1, 2, 2, 2])))


def test_collector_concatenates_batches_and_reports_over_the_whole_set():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=100).astype(np.float32)
    probs = rng.random(100).astype(np.float32)
    groups = rng.integers(0, 7, size=100)
    collector = PredictionCollector()
    for start in range(0, 100, 16):  # last batch is short
        batch = slice(start, start + 16)
        collector.append(torch.from_numpy(labels[batch]), torch.from_numpy(probs[batch]), groups[batch])
    assert len(collector) == 100
    collected = collector.predictions()
    np.testing.assert_array_equal(collected.labels, labels)
    np.testing.assert_array_equal(collected.groups, groups)
    assert collector.report() == ranking_report(labels, probs, groups)
    collector.reset()
    assert len(collector) == 0 and collector.predictions().groups is None


def test_collector_refuses_groups_on_some_batches_only():
    collector = PredictionCollector()
    collector.append(np.array([1.0]), np.array([0.5]), np.array(["a"]))
    with pytest.raises(ValueError, match="groups"):
        collector.append(np.array([0.0]), np.array([0.5]))


def test_gauc_takes_object_keys_and_rejects_missing_ones():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    keys = np.array(["a", "a", "b", "b"], dtype=object)
    assert gauc(labels, scores, keys) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing"):
        gauc(labels, scores, np.array(["a", None, "b", "b"], dtype=object))
