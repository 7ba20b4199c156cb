"""item2vec recovers planted co-occurrence groups; mean_pool averages the known ids of each list."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from recstack.pretrain import VectorTable, event_sequences, item2vec_main, mean_pool, read_vectors, train_item2vec

needs_gensim = pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="gensim is not installed")

GROUPS, ITEMS_PER_GROUP = 5, 10


def planted_sequences(num_sequences: int = 300, length: int = 20, seed: int = 0) -> list[list[str]]:
    """Each sequence draws its items from one of 5 disjoint groups of 10 items."""
    rng = np.random.default_rng(seed)
    sequences = []
    for group in rng.integers(0, GROUPS, num_sequences):
        members = group * ITEMS_PER_GROUP + rng.integers(0, ITEMS_PER_GROUP, length)
        sequences.append([f"item{m}" for m in members])
    return sequences


def group_precision_at_5(table: VectorTable) -> float:
    """Share of each item's 5 most cosine-similar items that are in its own group."""
    unit = table.vectors / np.linalg.norm(table.vectors, axis=1, keepdims=True)  # (N, D)
    similarity = unit @ unit.T  # (N, N)
    np.fill_diagonal(similarity, -np.inf)
    top5 = np.argsort(-similarity, axis=1)[:, :5]  # (N, 5)
    groups = np.array([int(item[4:]) // ITEMS_PER_GROUP for item in table.ids])
    return float((groups[top5] == groups[:, None]).mean())


@needs_gensim
def test_item2vec_recovers_planted_co_occurrence_groups() -> None:
    table = train_item2vec(planted_sequences(), dim=16, window=3, epochs=5, seed=0)
    assert len(table) == GROUPS * ITEMS_PER_GROUP and table.dim == 16
    precision = group_precision_at_5(table)
    assert precision >= 0.9, f"top-5 neighbours in the planted group: {precision:.2f}"


@needs_gensim
def test_item2vec_is_deterministic_for_a_seed() -> None:
    sequences = planted_sequences(num_sequences=60)
    first = train_item2vec(sequences, dim=8, epochs=2, seed=3)
    second = train_item2vec(sequences, dim=8, epochs=2, seed=3)
    other_seed = train_item2vec(sequences, dim=8, epochs=2, seed=4)
    assert first.ids == second.ids
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert not np.array_equal(first.vectors, other_seed.vectors)


@needs_gensim
def test_item2vec_is_deterministic_across_python_hash_seeds() -> None:
    script = (
        "import hashlib\n"
        "from recstack.pretrain import train_item2vec\n"
        "sequences = [[f'item{(7 * i + 3 * j) % 40}' for j in range(12)] for i in range(40)]\n"
        "table = train_item2vec(sequences, dim=4, epochs=1)\n"
        "print(hashlib.sha1(table.vectors.tobytes()).hexdigest(), table.ids[:5])\n"
    )
    runs = [  # started together: two interpreters, one core each
        subprocess.Popen(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in ("1", "2")
    ]
    results = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in results]
    outputs = {out for out, _ in results}
    assert len(outputs) == 1, outputs


@needs_gensim
def test_integer_ids_and_min_count() -> None:
    table = train_item2vec([[1, 2, 3], [1, 2], [1, 4]], dim=4, epochs=1, min_count=2)
    assert sorted(table.ids) == ["1", "2"]
    with pytest.raises(ValueError, match="min_count=5"):
        train_item2vec([[1, 2]], dim=4, min_count=5)


def write_events(path: Path) -> None:
    events = pa.table(
        {
            "user_id": ["b", "a", "a", "b", "a", None, "a"],
            "item_id": [9, 7, 3, 8, 5, 1, None],
            "timestamp": [1, 5, 2, 1, 5, 0, 0],
        }
    )
    if path.suffix == ".csv":
        pcsv.write_csv(events, path)
    else:
        pq.write_table(events, path)


@pytest.mark.parametrize("name", ["events.parquet", "events.csv"])
def test_event_tables_become_time_ordered_user_sequences(tmp_path: Path, name: str) -> None:
    write_events(tmp_path / name)
    sequences = event_sequences(tmp_path / name, user_column="user_id", item_column="item_id", time_column="timestamp")
    # user a: 3 (t=2), then 7 and 5 (t=5, file order kept); user b: a tie, file order; nulls dropped.
    assert sequences == [["3", "7", "5"], ["9", "8"]]
    if importlib.util.find_spec("gensim") is not None:
        table = train_item2vec(tmp_path / name, dim=4, epochs=1)
        assert sorted(table.ids) == ["3", "5", "7", "8", "9"]


@needs_gensim
def test_item2vec_command_writes_a_vector_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_events(tmp_path / "events.parquet")
    out = tmp_path / "out" / "item2vec.vec"
    code = item2vec_main([str(tmp_path / "events.parquet"), "--out", str(out), "--dim", "6", "--epochs", "1"])
    assert code == 0
    assert "wrote 5 item vectors of dim 6" in capsys.readouterr().out
    assert read_vectors(out).dim == 6


@needs_gensim
def test_item2vec_command_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_events(tmp_path / "events.parquet")
    argv = [str(tmp_path / "events.parquet"), "--out", str(tmp_path / "v.parquet"), "--user-column", "visitor"]
    assert item2vec_main(argv) == 1
    error = capsys.readouterr().err
    assert "events.parquet" in error and "missing column(s) ['visitor']" in error and "Traceback" not in error


def test_mean_pool_ignores_unknown_ids_and_gives_zeros_for_empty_lists() -> None:
    table = VectorTable(ids=["a", "b", "7"], vectors=np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 4.0]]))
    vectors, counts = mean_pool(table, [["a", "zz", "b"], [], ["zz"], ["b"], [7, "a", 7]])
    assert vectors.dtype == np.float32 and vectors.shape == (5, 2)
    np.testing.assert_allclose(vectors, [[0.5, 0.5], [0, 0], [0, 0], [0, 1], [5 / 3, 8 / 3]], rtol=1e-6)
    assert counts.tolist() == [2, 0, 0, 1, 3]


def test_mean_pool_takes_arrow_lists_with_nulls_and_matches_a_plain_mean() -> None:
    rng = np.random.default_rng(1)
    table = VectorTable(ids=[str(i) for i in range(20)], vectors=rng.standard_normal((20, 3)))
    lists = [list(rng.integers(0, 30, rng.integers(0, 6))) for _ in range(50)]  # ids 20..29 unknown
    arrow = pa.array([None] + [[int(v) for v in ids] for ids in lists], type=pa.list_(pa.int64()))
    vectors, counts = mean_pool(table, arrow)
    assert counts[0] == 0 and not vectors[0].any()
    for row, ids in enumerate(lists, start=1):
        known = [table.vectors[v] for v in ids if v < 20]
        assert counts[row] == len(known)
        np.testing.assert_allclose(vectors[row], np.mean(known, axis=0) if known else np.zeros(3), rtol=1e-5, atol=1e-6)
    empty_vectors, empty_counts = mean_pool(table, [])
    assert empty_vectors.shape == (0, 3) and empty_counts.shape == (0,)
