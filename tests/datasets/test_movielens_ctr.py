"""build_ctr: leakage-free histories and aggregates, time splits, files and the build cache.

The hand example (conftest ``HAND``), sorted by time; ``*`` marks label 1 (rating >= 4)::

    t=100 u1 i1 5*   u2 i1 2        t=150 u3 i1 4*
    t=200 u1 i2 3    u1 i3 4*       (a tie: neither sees the other)
    t=300 u1 i4 1    t=310 u2 i5 4*  t=320 u3 i6 5*  | t=330 u2 i6 3 (valid) | t=400 u4 i2 5* (test)

Training priors: positive rate 5/8, mean rating 28/8.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.datasets import build_ctr

PRIOR_RATE, PRIOR_RATING, M = 5 / 8, 28 / 8, 5


def rows_by_key(out: Path) -> dict[tuple[int, int], dict[str, Any]]:
    table = pa.concat_tables([pq.read_table(out / f"{name}.parquet") for name in ("train", "valid", "test")])
    return {(row["user_id"], row["item_id"]): row for row in table.to_pylist()}


@pytest.fixture
def hand_build(hand_official: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[tuple[int, int], dict[str, Any]]]:
    stats = build_ctr(tmp_path / "ctr", hand_official)
    return stats, rows_by_key(tmp_path / "ctr")


def test_history_excludes_ties_and_runs_oldest_to_newest(hand_build: Any) -> None:
    _, rows = hand_build
    assert rows[(1, 1)]["hist_item_ids"] == []
    assert rows[(1, 2)]["hist_item_ids"] == [1]  # item 3 shares t=200: excluded
    assert rows[(1, 3)]["hist_item_ids"] == [1]
    assert rows[(1, 4)]["hist_item_ids"] == [1, 2, 3]
    assert rows[(1, 4)]["hist_genres"] == ["Animation", "Action", "Comedy"]
    assert rows[(1, 4)]["hist_liked_item_ids"] == [1, 3]
    assert rows[(1, 4)]["hist_liked_genres"] == ["Animation", "Comedy"]
    assert rows[(2, 6)]["hist_item_ids"] == [1, 5] and rows[(2, 6)]["hist_liked_item_ids"] == [5]


def test_aggregates_use_only_strictly_earlier_rows(hand_build: Any) -> None:
    _, rows = hand_build
    last = rows[(1, 4)]  # three earlier rows, two liked, ratings 5, 3, 4
    assert last["user_count"] == 3
    assert last["user_pos_rate"] == pytest.approx((2 + PRIOR_RATE * M) / (3 + M))
    assert last["user_mean_rating"] == pytest.approx((12 + PRIOR_RATING * M) / (3 + M))
    assert rows[(1, 3)]["user_count"] == 1  # the tied row (1, 2) does not count
    assert rows[(1, 3)]["user_pos_rate"] == pytest.approx((1 + PRIOR_RATE * M) / (1 + M))
    late = rows[(3, 1)]  # item 1 was rated 5 and 2 at t=100
    assert late["item_count"] == 2
    assert late["item_pos_rate"] == pytest.approx((1 + PRIOR_RATE * M) / (2 + M))
    assert late["item_mean_rating"] == pytest.approx((7 + PRIOR_RATING * M) / (2 + M))
    first = rows[(2, 1)]  # tied with (1, 1): sees nothing, so the priors
    assert first["item_count"] == 0 and first["item_pos_rate"] == pytest.approx(PRIOR_RATE)
    assert first["user_mean_rating"] == pytest.approx(PRIOR_RATING)


def test_row_features_and_types(hand_build: Any, tmp_path: Path) -> None:
    _, rows = hand_build
    row = rows[(3, 6)]
    assert row["label"] == 1.0 and row["zip_prefix"] == "T8H" and row["age"] == 23
    assert row["genres"] == ["Action", "Animation", "Horror", "Sci-Fi"] and row["genre"] == "Action"
    assert row["title"] == "Heavy Metal" and row["release_year"] == 1981
    assert rows[(1, 4)]["release_year"] is None
    schema = pq.read_schema(tmp_path / "ctr" / "train.parquet")
    assert schema.field("user_id").type == pa.int64() and schema.field("label").type == pa.float32()
    assert schema.field("hist_item_ids").type == pa.list_(pa.int64())
    assert schema.field("hist_genres").type == pa.list_(pa.string())
    assert pq.read_table(tmp_path / "ctr" / "items.parquet").column_names == ["item_id", "title", "genres", "genre", "release_year"]
    assert pq.read_table(tmp_path / "ctr" / "users.parquet").column_names == ["user_id", "age", "gender", "occupation", "zip_prefix"]


def test_splits_are_by_time_and_stats_count_cold_users(hand_build: Any, tmp_path: Path) -> None:
    stats, _ = hand_build
    assert stats["rows"] == {"train": 8, "valid": 1, "test": 1}
    assert stats["positive_rate"]["train"] == pytest.approx(5 / 8)
    assert stats["test_users"] == 1 and stats["cold_test_users"] == 1  # user 4 first appears in test
    assert stats["valid_users"] == 1 and stats["cold_valid_users"] == 0
    assert json.loads((tmp_path / "ctr" / "stats.json").read_text())["rows"] == stats["rows"]


def test_random_data_matches_a_brute_force_reference(tmp_path: Path, fake_ml: SimpleNamespace) -> None:
    data = fake_ml.random(seed=3)
    source = fake_ml.write_recbole(tmp_path / "raw", data)
    stats = build_ctr(tmp_path / "ctr", source, history_len=4, valid_frac=0.15, test_frac=0.2)
    tables = {name: pq.read_table(tmp_path / "ctr" / f"{name}.parquet") for name in ("train", "valid", "test")}
    times = {name: table["timestamp"].to_pylist() for name, table in tables.items()}
    assert max(times["train"]) < min(times["valid"]) and max(times["valid"]) < min(times["test"])
    assert sum(stats["rows"].values()) == len(data.ratings)
    rows = rows_by_key(tmp_path / "ctr")
    train = tables["train"].to_pylist()
    prior_rate = sum(row["label"] for row in train) / len(train)
    for (user, item), row in rows.items():
        earlier = sorted((t, i, r) for u, i, r, t in data.ratings if u == user and t < row["timestamp"])
        assert row["hist_item_ids"] == [i for _, i, _ in earlier][-4:]
        assert row["hist_liked_item_ids"] == [i for _, i, r in earlier if r >= 4][-4:]
        assert row["user_count"] == len(earlier)
        positives = sum(r >= 4 for _, _, r in earlier)
        assert row["user_pos_rate"] == pytest.approx((positives + prior_rate * M) / (len(earlier) + M), rel=1e-5)
        item_earlier = [r for u, i, r, t in data.ratings if i == item and t < row["timestamp"]]
        assert row["item_count"] == len(item_earlier)


def test_a_second_call_reuses_the_build(hand_official: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctr"
    first = build_ctr(out, hand_official)
    written = (out / "train.parquet").stat().st_mtime_ns
    assert build_ctr(out, hand_official) == first
    assert (out / "train.parquet").stat().st_mtime_ns == written
    rebuilt = build_ctr(out, hand_official, history_len=2)  # other parameters: rebuilt
    assert rebuilt["params"]["history_len"] == 2


def test_bad_fractions_are_rejected(hand_official: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid_frac"):
        build_ctr(tmp_path / "ctr", hand_official, valid_frac=0.6, test_frac=0.5)
