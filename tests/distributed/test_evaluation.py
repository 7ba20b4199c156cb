"""Each rank scores its shard; metrics on the gathered union equal the one-process metrics."""

import math

import pytest
import torch

from ddp_workers import evaluate_both_ways, spawn, write_config


def test_gathered_metrics_equal_single_process_metrics(tmp_path):
    # 600 validation rows in 7 row groups (6 of 90, one of 60): uneven shards of 4 and 3 groups
    path = write_config(tmp_path, valid_rows=600, row_group_rows=90)
    spawn(evaluate_both_ways, str(path), str(tmp_path), 90)
    results = [torch.load(tmp_path / f"eval{rank}.pt") for rank in range(2)]
    single = results[0]["single"]
    assert single["count"] == 600 and not math.isnan(single["gauc"])
    for result in results:
        for name, value in single.items():
            # on the same predictions: AUC/GAUC ignore row order, means differ in float64 rounding
            assert result["same_predictions"][name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
            # end to end: scoring 90-row shards instead of one 600-row batch changes float32
            # probabilities in the last bit (~1e-7), so the metrics agree to ~1e-7 only
            assert result["gathered"][name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
        assert result["gathered"]["count"] == 600
    assert results[0]["gathered"] == results[1]["gathered"]  # identical on every rank
