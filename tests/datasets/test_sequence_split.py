"""Per-user sequences: leave-one-out and time splits, sequence-to-sequence training rows, counted
truncation, partitioned (bounded-memory) builds equal to in-memory ones, clear errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.data.sources import DataSource
from recstack.datasets.movielens_sequences import build_sequences
from recstack.datasets.sequence_split import SequenceSplitSpec, split_sequences, write_sequence_split
from recstack.datasets.synthetic_sequences import generate_sequence_events
from recstack.errors import DataError

# user 1: items by time 11 (t1) 12 (t2) 13 (t3) 14 (t4) 10 (t5); user 2: 20, 21; user 3: 30, 31 (tie, file order), 32
EVENTS = pa.table({
    "user_id": [1, 1, 1, 1, 1, 2, 2, 3, 3, 3],
    "item_id": [10, 11, 12, 13, 14, 20, 21, 30, 31, 32],
    "timestamp": [5, 1, 2, 3, 4, 1, 2, 1, 1, 9],
    "genre": list("abcdefghij"),
})  # fmt: skip


def test_leave_one_out_on_a_drawn_example() -> None:
    split = split_sequences(EVENTS, SequenceSplitSpec(max_len=2, side_columns=("genre",)))
    assert split.train.to_pydict() == {
        "user_id": [1, 2], "hist_item_ids": [[11, 12], [20]], "target_item_ids": [[12, 13], [21]],
        "item_id": [13, 21], "hist_genre": [["b", "c"], ["f"]],
    }  # fmt: skip
    # user 2 (2 events) is not evaluated; user 3 has no training pair (one training event)
    assert split.valid.to_pydict() == {"user_id": [1, 3], "hist_item_ids": [[12, 13], [30]], "item_id": [14, 31], "hist_genre": [["c", "d"], ["h"]]}
    assert split.test.to_pydict() == {"user_id": [1, 3], "hist_item_ids": [[13, 14], [30, 31]], "item_id": [10, 32], "hist_genre": [["d", "e"], ["h", "i"]]}
    assert split.seen.to_pydict() == {"user_id": [1, 2, 3], "seen_item_ids": [[11, 12, 13], [20, 21], [30]]}
    stats = split.stats
    assert (stats.users_without_training_pairs, stats.users_not_evaluated) == (1, 1)
    assert (stats.truncated_valid_rows, stats.truncated_test_rows) == (1, 1)  # user 1's 3 and 4 earlier items > 2


def test_time_split_on_a_drawn_example() -> None:
    split = split_sequences(EVENTS, SequenceSplitSpec(how="time", valid_start=3, test_start=5, max_len=3))
    assert split.train.column("hist_item_ids").to_pylist() == [[11], [20], [30]]
    assert split.train.column("target_item_ids").to_pylist() == [[12], [21], [31]]
    assert split.valid.to_pydict() == {"user_id": [1], "hist_item_ids": [[11, 12]], "item_id": [13]}
    # the test input holds every earlier event, validation-window ones included (most recent 3)
    assert split.test.to_pydict() == {"user_id": [1, 3], "hist_item_ids": [[12, 13, 14], [30, 31]], "item_id": [10, 32]}
    assert split.stats.truncated_test_rows == 1 and split.stats.users_not_evaluated == 1


def _random_events(seed: int, users: int = 40, string_users: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 30, users)
    user = np.repeat(np.arange(users), sizes)
    times = rng.integers(0, 10_000, len(user))  # distinct enough; ties keep file order
    items = rng.integers(1, 200, len(user))
    ids = [f"u{u}" for u in user] if string_users else user
    return pa.table({"user_id": ids, "item_id": items, "timestamp": times})


@pytest.mark.parametrize("all_positions", [True, False])
def test_every_target_follows_its_inputs_and_training_rows_are_aligned(all_positions: bool) -> None:
    events = _random_events(0)
    N = 6
    split = split_sequences(events, SequenceSplitSpec(max_len=N, all_positions=all_positions))
    users, times, items = (events[c].to_numpy() for c in ("user_id", "timestamp", "item_id"))
    sequences: dict[int, list[int]] = {}
    for i in np.lexsort((times, users)):  # stable: ties keep file order
        sequences.setdefault(int(users[i]), []).append(int(items[i]))
    for name, offset in (("test", 1), ("valid", 2)):
        for row in split.__getattribute__(name).to_pylist():
            seq = sequences[row["user_id"]]
            assert len(seq) >= 3 and row["item_id"] == seq[-offset]
            assert row["hist_item_ids"] == seq[: len(seq) - offset][-N:]  # only earlier items, the last N
    positions, dropped = 0, 0
    for row in split.train.to_pylist():
        inputs, targets = row["hist_item_ids"], row["target_item_ids"]
        assert 1 <= len(inputs) == len(targets) <= N and row["item_id"] == targets[-1]
        seq = sequences[row["user_id"]]
        train = seq[:-2] if len(seq) >= 3 else seq
        pairs = list(zip(train[:-1], train[1:]))
        window = list(zip(inputs, targets))
        assert any(pairs[i : i + len(window)] == window for i in range(len(pairs)))  # consecutive (x_k, x_k+1)
        positions += len(inputs)
    for seq in sequences.values():
        train = seq[:-2] if len(seq) >= 3 else seq
        dropped += max(len(train) - 1 - N, 0) if not all_positions else 0
    total = sum(max((len(s[:-2]) if len(s) >= 3 else len(s)) - 1, 0) for s in sequences.values())
    assert positions == split.stats.train_positions == total - dropped
    assert split.stats.dropped_positions == dropped
    assert split.stats.truncated_train_rows == sum((len(s[:-2]) if len(s) >= 3 else len(s)) - 1 > N for s in sequences.values())


@pytest.mark.parametrize("how", ["leave_one_out", "time"])
@pytest.mark.parametrize("string_users", [False, True])
def test_partitioned_build_equals_the_in_memory_one(tmp_path: Path, how: str, string_users: bool) -> None:
    events = _random_events(1, users=60, string_users=string_users)
    path = tmp_path / "events.parquet"
    pq.write_table(events, path, row_group_size=97)  # several record batches
    source = DataSource(paths=(str(path),), parquet_batch_rows=97)
    spec = SequenceSplitSpec(how=how, max_len=5)
    one = write_sequence_split(source, tmp_path / "one", spec)
    many = write_sequence_split(source, tmp_path / "many", spec, partitions=7)
    assert {k: v for k, v in one.as_dict().items() if k != "partitions"} == {k: v for k, v in many.as_dict().items() if k != "partitions"}
    for name in ("train", "valid", "test", "seen"):
        a, b = (pq.read_table(tmp_path / d / f"{name}.parquet") for d in ("one", "many"))
        key = ["user_id", "item_id"] if name == "train" else ["user_id"]
        assert a.sort_by([(k, "ascending") for k in key]).equals(b.sort_by([(k, "ascending") for k in key]))
    assert not list((tmp_path / "many").glob(".partitions-*"))  # the partition files are removed


def test_missing_column_names_the_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(EVENTS.drop_columns(["timestamp"]), path)
    with pytest.raises(DataError, match=r"timestamp") as error:
        write_sequence_split(DataSource(paths=(str(path),)), tmp_path / "out", SequenceSplitSpec())
    assert str(path) in str(error.value)
    with pytest.raises(DataError, match="null value"):
        split_sequences(EVENTS.set_column(0, "user_id", pa.array([1, None] * 5, pa.int64())), SequenceSplitSpec())


def test_build_sequences_on_fake_movielens(tmp_path: Path, fake_ml: SimpleNamespace) -> None:
    data = fake_ml.random(seed=3)
    stats = build_sequences(tmp_path / "seq", fake_ml.write_official(tmp_path / "raw", data), max_len=8)
    out = tmp_path / "seq"
    for name in ("train", "valid", "test", "seen", "items", "users"):
        assert (out / f"{name}.parquet").is_file()
    assert not (out / "events.parquet").exists()
    assert stats["events"] == len(data.ratings) and stats["items"] == len(data.items)
    test = pq.read_table(out / "test.parquet").to_pylist()
    assert len(test) == stats["test_rows"] > 0 and all(len(r["hist_item_ids"]) <= 8 for r in test)
    catalogue = pq.read_table(out / "items.parquet")
    genre = dict(zip(catalogue["item_id"].to_pylist(), catalogue["genre"].to_pylist()))  # the target's genre, joined
    assert all(r["genre"] == genre[r["item_id"]] for r in test)
    assert "genre" in pq.read_table(out / "train.parquet").column_names
    assert build_sequences(out, fake_ml.write_official(tmp_path / "raw", data), max_len=8) == stats  # cached


def test_planted_transitions_are_followed() -> None:
    events, successor = generate_sequence_events(num_users=200, num_items=50, length=10, follow=0.8, seed=0)
    items = events["item_id"].to_numpy().reshape(200, 10)
    followed = (items[:, 1:] == successor[items[:, :-1]]).mean()
    assert 0.75 < followed < 0.9 and items.min() >= 1 and items.max() <= 50


def test_cli_builds_sequences(tmp_path: Path, fake_ml: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    from recstack.cli import main

    raw = fake_ml.write_official(tmp_path / "raw", fake_ml.random(seed=4))
    assert main(["datasets", "movielens-sequences", "--out", str(tmp_path / "seq"), "--source", str(raw), "--max-len", "5", "--partitions", "2"]) == 0
    assert "wrote movielens-sequences" in capsys.readouterr().out
    assert all(len(h) <= 5 for h in pq.read_table(tmp_path / "seq" / "test.parquet")["hist_item_ids"].to_pylist())
    assert main(["datasets", "synthetic-sequences", "--out", str(tmp_path / "syn"), "--rows", "400"]) == 0
    assert pq.read_table(tmp_path / "syn" / "train.parquet").num_rows == 20  # 400 // 20 users


def test_cli_time_split_and_config_dataset_build(tmp_path: Path, fake_ml: SimpleNamespace) -> None:
    from recstack.cli import main
    from recstack.config import RunConfig
    from recstack.workflows.datasets import ensure_dataset

    raw = fake_ml.write_official(tmp_path / "raw", fake_ml.random(seed=6))
    assert main(["datasets", "movielens-sequences", "--out", str(tmp_path / "t"), "--source", str(raw), "--split", "time"]) == 0
    train, test = (pq.read_table(tmp_path / "t" / f"{n}.parquet") for n in ("train", "test"))
    assert test.num_rows > 0 and train.num_rows > 0
    config = RunConfig.from_dict({
        "data": {"dataset": "synthetic_sequences", "dir": str(tmp_path / "syn")},
        "schema": "schemas/movielens_sequences.yaml", "task": {"type": "retrieval", "loss": "full_softmax"},
        "model": {"name": "sasrec"}, "output": str(tmp_path / "run"),
    }, base_dir=Path(__file__).resolve().parents[2])  # fmt: skip
    assert config.data.seen is None and config.data.catalog is not None
    ensure_dataset(config.data)
    assert all(Path(p).is_file() for source in (config.data.train, config.data.valid, config.data.test, config.data.catalog) for p in source.paths)
