"""Numeric features: missing values filled, then normalised (standardised unless told otherwise)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.data.batch import OOV_INDEX
from recstack.data.numeric import NumericStats
from recstack.schema import NumericTransform

from ._files import fit, read_all, write_parquet, write_text

AGES = [10.0, 20.0, 30.0, 40.0, None]


def age_schema(**feature: object) -> dict:
    return {"label": None, "features": [{"name": "age", "kind": "numeric", **feature}]}


def dense(pre, values) -> list[float]:
    return pre.transform(pa.record_batch({"age": pa.array(values, pa.float64())})).dense["age"].tolist()


def test_numbers_are_standardised_by_default(tmp_path):
    pre, source = fit(age_schema(), write_parquet(tmp_path / "t.parquet", {"age": AGES}))
    assert pre.schema["age"].transform is NumericTransform.STANDARD
    out = read_all(pre, source).dense["age"]
    assert out.dtype == torch.float32 and out.shape == (5,)
    assert out[:4].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out[:4].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_missing_values_take_the_training_mean_by_default(tmp_path):
    pre, _ = fit(age_schema(), write_parquet(tmp_path / "t.parquet", {"age": AGES}))
    assert dense(pre, [None, 25.0]) == [pytest.approx(0.0), pytest.approx(0.0)]


def test_an_explicit_fill_value_replaces_missing_values(tmp_path):
    pre, _ = fit(age_schema(fill=40.0, transform="none"), write_parquet(tmp_path / "t.parquet", {"age": AGES}))
    assert dense(pre, [None, 1.5]) == [40.0, 1.5]


def test_minmax_maps_the_training_range_to_0_1(tmp_path):
    pre, _ = fit(age_schema(transform="minmax"), write_parquet(tmp_path / "t.parquet", {"age": AGES}))
    assert dense(pre, [10.0, 25.0, 40.0, 70.0]) == pytest.approx([0.0, 0.5, 1.0, 2.0])


def test_log1p_takes_the_log_of_the_clipped_value_then_standardises(tmp_path):
    counts = [0.0, 9.0, 99.0, 999.0]
    pre, _ = fit(age_schema(transform="log1p"), write_parquet(tmp_path / "t.parquet", {"age": counts}))
    logs = np.log1p(np.array(counts))
    expected = (logs - logs.mean()) / logs.std()
    assert dense(pre, counts) == pytest.approx(expected.tolist(), abs=1e-5)
    assert dense(pre, [-5.0]) == pytest.approx([expected[0]], abs=1e-5)  # negatives count as 0


def test_none_passes_values_through(tmp_path):
    pre, _ = fit(age_schema(transform="none"), write_parquet(tmp_path / "t.parquet", {"age": AGES}))
    assert dense(pre, [3.25, -1.0]) == [3.25, -1.0]


def test_bucketize_with_boundaries_gives_embedding_rows(tmp_path):
    pre, _ = fit(
        age_schema(transform="bucketize", boundaries=[18, 30, 65], dim=4),
        write_parquet(tmp_path / "t.parquet", {"age": AGES}),
    )
    batch = pre.transform(pa.record_batch({"age": pa.array([5.0, 18.0, 29.0, 30.0, 80.0, None])}))
    # Row 0 padding, 1 missing, then one row per bucket: (-inf,18) [18,30) [30,65) [65,inf).
    assert "age" not in batch.dense
    assert batch.ids["age"].tolist() == [2, 3, 3, 4, 5, OOV_INDEX]
    table = pre.feature_map().tables["age"]
    assert (table.num_rows, table.dim) == (6, 4)


def test_bucketize_without_boundaries_uses_training_quantiles(tmp_path):
    values = np.arange(1000, dtype=np.float64)
    pre, _ = fit(age_schema(transform="bucketize", num_buckets=4), write_parquet(tmp_path / "t.parquet", {"age": values}))
    ids = pre.transform(pa.record_batch({"age": values})).ids["age"]
    assert np.bincount(ids.numpy())[2:].tolist() == [250, 250, 250, 250]


def test_numbers_are_parsed_from_text_columns(tmp_path):
    path = write_text(tmp_path / "t.csv", "id,age\na,10\nb, 20 \nc,\nd,4e1\n")
    pre, source = fit(age_schema(transform="none"), path)
    assert read_all(pre, source).dense["age"].tolist() == [10.0, 20.0, pytest.approx(70 / 3), 40.0]


def test_integer_and_boolean_columns_are_numbers(tmp_path):
    pre, _ = fit(age_schema(transform="none"), write_parquet(tmp_path / "t.parquet", {"age": [1, 2]}))
    assert pre.transform(pa.record_batch({"age": pa.array([3, None], pa.int32())})).dense["age"].tolist() == [3.0, 1.5]
    assert pre.transform(pa.record_batch({"age": [True, False]})).dense["age"].tolist() == [1.0, 0.0]


def test_statistics_stream_in_one_pass_and_stay_accurate_far_from_zero():
    # A running sum of squares would lose this variance (values near 1e9) to cancellation.
    rng = np.random.default_rng(0)
    parts = [1e9 + rng.random(1000) for _ in range(10)]
    stats = NumericStats()
    for part in parts:
        stats.update(np.append(part, np.nan))
    everything = np.concatenate(parts)
    assert stats.count == everything.size
    assert stats.mean == pytest.approx(everything.mean(), rel=1e-15)
    assert np.sqrt(stats.m2 / stats.count) == pytest.approx(everything.std(), rel=1e-6)
