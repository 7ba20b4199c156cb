"""build_retrieval / leave_last_out: the last positive is test, the one before is valid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from recstack.datasets import build_retrieval, leave_last_out


def read(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def test_leave_last_out_on_a_drawn_example() -> None:
    # user 1 positives in time: 10, 11, 12 (t=3, tied with 13), 13, 14; item 99 is a negative
    interactions = pa.table(
        {
            "user_id": [1, 1, 1, 1, 1, 1, 2, 2],
            "item_id": [14, 10, 11, 12, 13, 99, 20, 21],
            "timestamp": [5, 1, 2, 3, 3, 4, 1, 2],
            "label": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        }
    )
    split = leave_last_out(interactions, history_len=10)
    assert split.test.to_pydict()["item_id"] == [14]
    assert split.valid.to_pydict()["item_id"] == [13]
    assert split.test["hist_item_ids"].to_pylist() == [[10, 11, 12, 13]]  # includes the valid item
    assert split.valid["hist_item_ids"].to_pylist() == [[10, 11, 12]]
    train = split.train.to_pydict()
    assert train["item_id"] == [10, 11, 12, 20, 21]  # user 2 has two positives: all in train
    assert train["hist_item_ids"] == [[], [10], [10, 11], [], [20]]
    assert "label" not in split.train.column_names
    seen = dict(zip(split.seen["user_id"].to_pylist(), split.seen["seen_item_ids"].to_pylist()))
    assert seen == {1: [10, 11, 12, 99], 2: [20, 21]}


def test_history_keeps_the_last_n() -> None:
    interactions = pa.table(
        {"user_id": [7] * 6, "item_id": [1, 2, 3, 4, 5, 6], "timestamp": [1, 2, 3, 4, 5, 6], "label": [1.0] * 6}
    )
    split = leave_last_out(interactions, history_len=2)
    assert split.test["hist_item_ids"].to_pylist() == [[4, 5]]
    assert split.train["hist_item_ids"].to_pylist()[-1] == [2, 3]


def test_build_retrieval_on_random_data(tmp_path: Path, fake_ml: SimpleNamespace) -> None:
    data = fake_ml.random(seed=5)
    stats = build_retrieval(tmp_path / "ret", fake_ml.write_official(tmp_path / "raw", data), history_len=50)
    out = tmp_path / "ret"
    positives: dict[int, list[tuple[int, int]]] = {}
    for user, item, rating, timestamp in data.ratings:
        if rating >= 4:
            positives.setdefault(user, []).append((timestamp, item))
    evaluated = {user: sorted(items) for user, items in positives.items() if len(items) >= 3}
    test = {row["user_id"]: row for row in read(out, "test")}
    valid = {row["user_id"]: row for row in read(out, "valid")}
    assert set(test) == set(valid) == set(evaluated)
    for user, ordered in evaluated.items():
        assert test[user]["item_id"] == ordered[-1][1]
        assert valid[user]["item_id"] == ordered[-2][1]
        assert test[user]["hist_item_ids"] == [item for _, item in ordered[:-1]]
    train = read(out, "train")
    held = {(user, row["item_id"]) for table in (test, valid) for user, row in table.items()}
    assert not held & {(row["user_id"], row["item_id"]) for row in train}
    assert len(train) == sum(len(items) for items in positives.values()) - len(held)
    for row in train:
        assert row["genre"] is not None and len(row["hist_genres"]) == len(row["hist_item_ids"])
    seen = {row["user_id"]: set(row["seen_item_ids"]) for row in read(out, "seen")}
    for user, _, _, _ in data.ratings:
        rated = {item for u, item, _, _ in data.ratings if u == user}
        assert seen[user] == rated - {item for u, item in held if u == user}
    assert stats["train_rows"] == len(train) and stats["evaluated_users"] == len(evaluated)
    assert {"seen.parquet", "items.parquet", "users.parquet", "stats.json"} <= {p.name for p in out.iterdir()}
