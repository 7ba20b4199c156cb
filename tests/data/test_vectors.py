"""Vector features: several float columns (seed 000's headerless u_1..u_128, i_1..i_128), or one
list<float> / delimited column, as a ``(B, D)`` float32 tensor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.errors import DataError

from ._files import fit, read_all, write_parquet, write_text

DIM = 128
SEED_000_COLUMNS = ["label"] + [f"u_{i}" for i in range(1, DIM + 1)] + [f"i_{i}" for i in range(1, DIM + 1)]


def seed_000_schema() -> dict:
    return {
        "label": "label",
        "features": [
            {"name": "user_vec", "kind": "vector", "dim": DIM, "columns": [f"u_{i}" for i in range(1, DIM + 1)]},
            {"name": "item_vec", "kind": "vector", "dim": DIM, "columns": [f"i_{i}" for i in range(1, DIM + 1)]},
        ],
    }


def write_seed_000(path, rows: np.ndarray) -> str:
    lines = [",".join([str(int(r[0]))] + [f"{v:.6g}" for v in r[1:]]) for r in rows]
    return write_text(path, "\n".join(lines) + "\n")


def test_vectors_from_the_columns_of_a_headerless_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.integers(0, 2, 6), rng.normal(size=(6, 2 * DIM))]).round(4)
    path = write_seed_000(tmp_path / "train.csv", rows)
    pre, source = fit(seed_000_schema(), path, header=False, column_names=tuple(SEED_000_COLUMNS))
    batch = read_all(pre, source)
    assert batch.dense["user_vec"].dtype == torch.float32
    assert batch.dense["user_vec"].shape == (6, DIM) and batch.dense["item_vec"].shape == (6, DIM)
    np.testing.assert_allclose(batch.dense["user_vec"].numpy(), rows[:, 1 : DIM + 1], rtol=1e-6)
    np.testing.assert_allclose(batch.dense["item_vec"].numpy(), rows[:, DIM + 1 :], rtol=1e-6)
    assert batch.label.tolist() == rows[:, 0].tolist()
    assert pre.feature_map().dense_width(pre.schema["user_vec"]) == DIM


def test_vectors_keep_the_declared_column_order_and_missing_values_are_zero(tmp_path):
    schema = {"label": None, "features": [{"name": "v", "kind": "vector", "dim": 3, "columns": ["c", "a", "b"]}]}
    pre, source = fit(schema, write_parquet(tmp_path / "t.parquet", {"a": [1.0, 4.0], "b": [2.0, None], "c": [3.0, 6.0]}))
    assert read_all(pre, source).dense["v"].tolist() == [[3.0, 1.0, 2.0], [6.0, 4.0, 0.0]]


def test_vectors_from_a_list_column(tmp_path):
    schema = {"label": None, "features": [{"name": "emb", "kind": "vector", "dim": 2}]}
    path = write_parquet(tmp_path / "t.parquet", {"emb": pa.array([[0.5, 1.5], [2.0, -1.0]], pa.list_(pa.float32()))})
    pre, source = fit(schema, path)
    assert read_all(pre, source).dense["emb"].tolist() == [[0.5, 1.5], [2.0, -1.0]]
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0], pa.float64()), 2)
    assert pre.transform(pa.record_batch({"emb": fixed})).dense["emb"].tolist() == [[1.0, 2.0]]


def test_vectors_from_a_delimited_string_column(tmp_path):
    schema = {"label": None, "features": [{"name": "emb", "kind": "vector", "dim": 3, "delimiter": " "}]}
    pre, source = fit(schema, write_text(tmp_path / "t.csv", "emb\n0.1 0.2 0.3\n1 2 3\n"))
    assert read_all(pre, source).dense["emb"].tolist() == [pytest.approx([0.1, 0.2, 0.3]), [1.0, 2.0, 3.0]]


def test_a_vector_of_the_wrong_length_names_its_row(tmp_path):
    schema = {"label": None, "features": [{"name": "emb", "kind": "vector", "dim": 2}]}
    path = write_parquet(tmp_path / "t.parquet", {"emb": [[0.5, 1.5], [2.0], [1.0, 2.0]]})
    pre, source = fit(schema, path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert (error.value.path, error.value.row, error.value.column) == (path, 2, "emb")
    assert "expected a vector of 2 values, got 1" in str(error.value)
