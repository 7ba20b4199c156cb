"""Retrieval from an event table plus an item catalogue, as users hold their data.

The event files carry only user columns and the item id (under a name of the user's choosing);
the item-tower features come from the catalogue, joined by id inside the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from recstack.cli import main
from recstack.config import RunConfig
from recstack.data.catalog_join import with_catalog
from recstack.data.sources import DataSource
from recstack.datasets import generate_retrieval
from recstack.errors import ConfigError, DataError
from recstack.evaluation.retrieval_metrics import evaluate_retrieval
from recstack.workflows.predict import evaluate_run
from recstack.workflows.retrieval import held_out
from recstack.workflows.train import train_run

torch.set_num_threads(1)

USER_COLUMNS = ["user_id", "segment", "hist_item_ids"]
SCHEMA = {
    "label": None,
    "group": "user_id",
    "tables": {"item": {"dim": 16}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 16},
        {"name": "segment", "kind": "categorical", "side": "user", "dim": 8},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 20, "pooling": "mean", "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "genre", "kind": "categorical", "side": "item", "dim": 8},
    ],
}


@pytest.fixture(scope="module")
def retrieval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A planted-cluster data set in the old layout, plus event files (user columns and the item
    id renamed to ``next_item``) written beside it."""
    folder = tmp_path_factory.mktemp("synthetic_retrieval")
    generate_retrieval(folder, num_users=300, num_items=200, interactions_per_user=12, num_clusters=10, seed=0)
    for split in ("train", "valid", "test"):
        table = pq.read_table(folder / f"{split}.parquet")
        events = table.select(USER_COLUMNS).append_column("next_item", table.column("item_id"))
        pq.write_table(events, folder / f"{split}_events.parquet")
    return folder


def _config(folder: Path, out: Path, *, events: bool, **data: Any) -> RunConfig:
    suffix = "_events" if events else ""
    raw = {
        "name": "events" if events else "rows",
        "seed": 0,
        "data": {
            "train": str(folder / f"train{suffix}.parquet"),
            "valid": str(folder / f"valid{suffix}.parquet"),
            "test": str(folder / f"test{suffix}.parquet"),
            "catalog": str(folder / "items.parquet"),
            "seen": str(folder / "seen.parquet"),
            **data,
        },
        "schema": SCHEMA,
        "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1, **({"target_column": "next_item"} if events else {})},
        "model": {"name": "dssm", "params": {"hidden_dims": [32], "output_activation": "identity"}},
        "loader": {"batch_size": 256, "shuffle_buffer": 10_000},
        "trainer": {"epochs": 2, "lr": 0.01, "progress": False, "monitor": "recall@10"},
        # the rows' history is not excluded, so the seen items decide what is excluded
        "evaluation": {"ks": [10, 50], "exclude_columns": []},
        "output": str(out),
    }
    return RunConfig.from_dict(raw, base_dir=folder)


@pytest.fixture(scope="module")
def trained(retrieval_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("runs")
    events = train_run(_config(retrieval_dir, out / "events", events=True), log=lambda _: None)
    rows = train_run(_config(retrieval_dir, out / "rows", events=False), log=lambda _: None)
    return {"events": events, "rows": rows, "run": out / "events"}


def test_events_plus_catalogue_train_exactly_like_rows_with_copied_item_features(trained: dict[str, Any]) -> None:
    # the same rows after the join, the same vocabularies, the same seed: the same run
    assert trained["events"]["valid"] == trained["rows"]["valid"]
    valid = trained["events"]["valid"]
    assert valid["users"] > 250
    assert valid["recall@50"] > 3 * 50 / 200  # far above a random ranking of 200 items


def test_evaluate_takes_the_catalogue_and_the_seen_items(trained: dict[str, Any], retrieval_dir: Path, tmp_path: Path) -> None:
    run = trained["run"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["task"]["target_column"] == "next_item"  # kept with the run, so evaluate reads it too
    test_events = DataSource(paths=(str(retrieval_dir / "test_events.parquet"),))
    default = evaluate_run(run, test_events, write=False)  # the run's data.catalog and data.seen
    assert default == trained["events"]["test"]
    # the training events themselves, one (user, next_item) per row, as the seen items: the
    # same items as seen.parquet's lists (every interaction but the held-out two)
    assert evaluate_run(run, test_events, seen=str(retrieval_dir / "train_events.parquet"), write=False) == default
    # only the validation item seen: the training items compete with the target again
    fewer_seen = evaluate_run(run, test_events, seen=str(retrieval_dir / "valid_events.parquet"), write=False)
    assert fewer_seen["mrr"] < default["mrr"] and fewer_seen["users"] == default["users"]
    # a catalogue of half the items: targets outside it cannot be ranked, fewer users
    items = pq.read_table(retrieval_dir / "items.parquet")
    pq.write_table(items.slice(0, items.num_rows // 2), tmp_path / "half.parquet")
    half = evaluate_run(run, test_events, catalog=str(tmp_path / "half.parquet"), write=False)
    targets = pq.read_table(test_events.paths[0]).column("next_item").to_numpy()
    assert half["users"] == int(np.isin(targets, items.column("item_id").to_numpy()[: items.num_rows // 2]).sum())
    assert half["users"] < default["users"]


def test_cli_evaluate_catalog_and_seen(trained: dict[str, Any], retrieval_dir: Path) -> None:
    run = trained["run"]
    test_events = str(retrieval_dir / "test_events.parquet")
    args = ["evaluate", str(run), "--data", test_events, "--catalog", str(retrieval_dir / "items.parquet")]
    assert main(args + ["--seen", str(retrieval_dir / "valid_events.parquet")]) == 0
    fewer_seen = _metrics(run, test_events)
    assert main(args + ["--seen", str(retrieval_dir / "train_events.parquet")]) == 0
    assert _metrics(run, test_events) == trained["events"]["test"] != fewer_seen


def _metrics(run: Path, data: str) -> dict[str, float]:
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["evaluations"][data]


def test_a_missing_catalogue_id_names_the_file_row_and_id(retrieval_dir: Path, tmp_path: Path) -> None:
    events = pq.read_table(retrieval_dir / "train_events.parquet").slice(0, 50)
    ids = events.column("next_item").to_numpy().copy()
    ids[37] = 99_999
    path = tmp_path / "train.parquet"
    pq.write_table(events.set_column(events.schema.get_field_index("next_item"), "next_item", pa.array(ids)), path)
    config = _config(retrieval_dir, tmp_path / "run", events=True, train=str(path))
    with pytest.raises(DataError) as error:
        train_run(config, log=lambda _: None)
    assert error.value.path == str(path) and error.value.row == 38 and error.value.column == "next_item"
    assert "99999" in str(error.value) and "not in the catalogue" in str(error.value)


def test_skip_bad_rows_drops_events_whose_item_is_not_in_the_catalogue(retrieval_dir: Path, tmp_path: Path) -> None:
    catalog = DataSource(paths=(str(retrieval_dir / "items.parquet"),))
    pacsv.write_csv(pa.table({"user_id": ["1", "2", "3"], "item": ["5", "77777", "6"]}), tmp_path / "events.csv")
    base = DataSource.from_config({"path": str(tmp_path / "events.csv"), "skip_bad_rows": True})
    events = with_catalog(base, catalog=catalog, item_column="item_id", target_column="item", item_columns=["item_id", "genre"])
    chunks = list(events.chunks(columns=["user_id", "item_id", "genre"], types={"user_id": pa.string(), "item_id": pa.string()}))
    records = pa.Table.from_batches([c.records for c in chunks])
    items = pq.read_table(retrieval_dir / "items.parquet").to_pydict()
    genre_of = dict(zip(items["item_id"], items["genre"]))
    # CSV text ids meet the catalogue's integers; the unknown item 77777 is dropped and counted
    assert records.column("item_id").to_pylist() == ["5", "6"]
    assert records.column("genre").to_pylist() == [genre_of[5], genre_of[6]]
    assert len(events.skipped) == 1


def test_the_target_column_must_exist_and_be_a_name(retrieval_dir: Path, tmp_path: Path) -> None:
    users_only = tmp_path / "users_only.parquet"
    pq.write_table(pq.read_table(retrieval_dir / "train_events.parquet", columns=USER_COLUMNS), users_only)
    config = _config(retrieval_dir, tmp_path / "run", events=True, train=str(users_only))
    with pytest.raises(DataError, match="next_item.*task.target_column") as error:
        train_run(config, log=lambda _: None)
    assert error.value.path == str(users_only)
    # a file that names the item id as the catalogue does is read as is
    config = _config(retrieval_dir, tmp_path / "run", events=True, train=str(retrieval_dir / "train.parquet"))
    chunk = next(config.data.train.chunks(columns=["user_id", "item_id", "genre"]))
    assert chunk.records.column("item_id").equals(pq.read_table(retrieval_dir / "train.parquet").column("item_id").slice(0, chunk.records.num_rows).combine_chunks())
    raw = dict(config.raw)
    raw["task"] = {**raw["task"], "target_column": 3}
    with pytest.raises(ConfigError, match="task.target_column"):
        RunConfig.from_dict(raw, base_dir=retrieval_dir)


def test_per_row_exclusion_lists_change_ranks_as_written(tmp_path: Path) -> None:
    """Two users, four items; user 0 prefers items 0 > 1 > 2 > 3, user 1 the reverse."""
    catalog = np.array([100, 101, 102, 103])
    item_vectors = torch.tensor([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])  # (N=4, D=2)
    user_vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (U=2, D)
    # user 0's target 102 ranks 3rd; excluding 100 (a list) and 101 (a string) lifts it to 1st.
    # user 1's target 101 ranks 3rd; its exclusions name 103 and an unknown id 555: 2nd.
    pq.write_table(
        pa.table({"user_id": [7, 8], "next_item": [102, 101], "skip": [[100], [103, 555]], "also": ["101", ""]}),
        tmp_path / "test.parquet",
    )
    split = with_catalog(DataSource(paths=(str(tmp_path / "test.parquet"),)), catalog=None, item_column="item_id", target_column="next_item")

    def metrics(columns: list[str] | None) -> dict:
        rows = held_out(split, None, catalog, user_column="user_id", item_column="item_id", exclude_columns=columns, delimiter="|")
        return evaluate_retrieval(user_vectors[rows.rows], item_vectors, rows.targets, exclude=(rows.exclude_indptr, rows.exclude_indices), ks=(1, 2))

    none = metrics([])
    assert none["mrr"] == pytest.approx((1 / 3 + 1 / 3) / 2) and none["hitrate@2"] == 0.0
    both = metrics(["skip", "also"])
    assert both["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert both["hitrate@1"] == 0.5 and both["hitrate@2"] == 1.0
    only_list = metrics(["skip"])  # user 0 then has 101 above its target: rank 2
    assert only_list["mrr"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_exclude_columns_in_the_config_reach_the_evaluation(tmp_path: Path) -> None:
    raw = {
        "data": {"train": str(tmp_path / "t.parquet")},
        "schema": SCHEMA,
        "task": {"type": "retrieval"},
        "model": "dssm",
        "evaluation": {"exclude_columns": "skip", "exclude_delimiter": "|"},
    }
    config = RunConfig.from_dict(raw, base_dir=tmp_path)
    assert config.evaluation.exclude_columns == ("skip",) and config.evaluation.exclude_delimiter == "|"
    raw["evaluation"] = {"exclude_columns": [1]}
    with pytest.raises(ConfigError, match="evaluation.exclude_columns"):
        RunConfig.from_dict(raw, base_dir=tmp_path)


def test_catalog_and_seen_are_refused_for_a_ranking_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recstack.workflows.datasets import write_synthetic_ctr_splits

    write_synthetic_ctr_splits(tmp_path / "ctr", rows=(600, 200, 200), seed=0)
    schema = {
        "label": "label",
        "features": [{"name": "user_id", "kind": "categorical", "dim": 4}, {"name": "item_id", "kind": "categorical", "dim": 4}],
    }
    raw = {
        "data": {"train": str(tmp_path / "ctr" / "train.parquet")},
        "schema": schema,
        "model": "lr",
        "trainer": {"epochs": 1, "progress": False},
        "output": str(tmp_path / "run"),
    }
    train_run(RunConfig.from_dict(raw, base_dir=tmp_path), log=lambda _: None)
    args = ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "ctr" / "test.parquet"), "--catalog", str(tmp_path / "items.parquet")]
    assert main(args) != 0
    assert "--catalog and --seen apply to retrieval runs" in capsys.readouterr().err


def test_a_catalogue_with_a_repeated_id_is_named(tmp_path: Path) -> None:
    pq.write_table(pa.table({"item_id": [1, 2, 2], "genre": ["a", "b", "c"]}), tmp_path / "items.parquet")
    pq.write_table(pa.table({"user_id": [1], "next_item": [2]}), tmp_path / "events.parquet")
    catalog = DataSource(paths=(str(tmp_path / "items.parquet"),))
    events = with_catalog(DataSource(paths=(str(tmp_path / "events.parquet"),)), catalog=catalog, item_column="item_id", target_column="next_item", item_columns=["genre"])
    with pytest.raises(DataError, match="must be unique") as error:
        next(events.chunks(columns=["user_id", "item_id", "genre"]))
    assert error.value.path == str(tmp_path / "items.parquet") and error.value.column == "item_id"
