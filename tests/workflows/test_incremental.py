"""Incremental training end to end: ``train_run(config, init_from=RUN)`` and ``recstack train
CONFIG --init-from RUN`` on a new day of data with new items.

The label is planted on the item (even ids are liked), so new items can only be scored well when
they get rows of their own and train; the parent, for which they are OOV, cannot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from recstack.cli import main as cli_main
from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, RunFolderError
from recstack.evaluation.ranking_metrics import auc as auc_score
from recstack.export.run_folder import load_run
from recstack.models import build_model
from recstack.training import Trainer
from recstack.workflows.predict import score_rows
from recstack.workflows.train import train_run

torch.set_num_threads(1)

SCHEMA = {
    "label": "label",
    "tables": {"item": {"dim": 8}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 8},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 5, "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "price", "kind": "numeric", "side": "item"},
    ],
}
MODEL = {"name": "deepfm", "params": {"hidden_dims": [16]}}


def write_day(path: Path, items: tuple[int, int], rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    item = rng.integers(*items, rows)
    liked = (item % 2 == 0) ^ (rng.random(rows) < 0.1)  # 10% label noise
    table = pa.table(
        {
            "user_id": rng.integers(0, 50, rows),
            "hist_item_ids": [",".join(map(str, rng.integers(0, items[1], 4))) for _ in range(rows)],
            "item_id": item,
            "price": rng.normal(20, 5, rows) + item * 0.1,
            "label": liked.astype(np.int64),
        }
    )
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("days")
    return {
        "day1": write_day(folder / "day1.parquet", (0, 40), 3000, seed=1),
        "day2": write_day(folder / "day2.parquet", (0, 60), 3000, seed=2),  # items 40..59 are new
        "valid": write_day(folder / "valid.parquet", (0, 60), 1500, seed=3),
        "new_items": write_day(folder / "new_items.parquet", (40, 60), 1500, seed=4),
    }


def config(folder: Path, days: dict[str, Path], name: str, train: str, **extra) -> dict:
    return {
        "name": name,
        "data": {"train": str(days[train]), "valid": str(days["valid"])},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": MODEL,
        "loader": {"batch_size": 128, "shuffle_buffer": 3000},
        "trainer": {"epochs": 3, "lr": 0.01, "progress": False},
        "output": str(folder / name),
        **extra,
    }


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, days: dict[str, Path]) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    train_run(RunConfig.from_dict(config(folder, days, "day1", "day1")), log=lambda _: None)
    return folder / "day1"


def new_item_auc(run: Path, days: dict[str, Path]) -> float:
    loaded = load_run(run)
    source = DataSource(paths=(str(days["new_items"]),))
    labels = pq.read_table(days["new_items"]).column("label").to_numpy()
    return auc_score(labels, score_rows(loaded, source))


def test_incremental_run_grows_new_items_which_train_and_records_its_parent(tmp_path: Path, days: dict[str, Path], parent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before_training: dict[str, dict] = {}
    real_fit = Trainer.fit

    def fit(self, model, *args, **kwargs):  # the weights the workflow hands the trainer: grown, no step taken
        before_training["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_fit(self, model, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit)
    metrics = train_run(RunConfig.from_dict(config(tmp_path, days, "day2", "day2")), init_from=parent, log=lambda _: None)
    child = tmp_path / "day2"

    assert metrics["incremental"]["tables"]["item"] == {"rows_before": 42, "rows_after": 62, "added": 20}
    assert metrics["incremental"]["parent_run"] == str(parent.resolve())
    assert json.loads((child / "model.json").read_text())["parent_run"] == str(parent.resolve())
    assert yaml.safe_load((child / "config.yaml").read_text())["incremental"]["init_from"] == str(parent.resolve())
    assert json.loads((child / "metrics.json").read_text())["incremental"]["numeric"] == "keep"

    # before any step: old ids' rows and every prediction on old-only rows are the parent's
    parent_run, child_run = load_run(parent), load_run(child)
    grown = build_model("deepfm", child_run.feature_map, MODEL["params"]).eval()
    grown.load_state_dict(before_training["state"])
    old_rows = pq.read_table(days["day1"]).slice(0, 500).to_batches()[0]
    with torch.no_grad():
        expected = parent_run.model(parent_run.preprocessor.transform(old_rows))
        got = grown(child_run.preprocessor.transform(old_rows))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    key = "embeddings.tables.item.weight"
    torch.testing.assert_close(before_training["state"][key][:42], parent_run.model.state_dict()[key], rtol=0, atol=0)

    # a new item has its own row (OOV in the parent), and it trained away from its init
    new_rows = child_run.preprocessor.transform(pq.read_table(days["new_items"]).to_batches()[0]).ids["item_id"]
    assert (new_rows >= 42).all() and len(new_rows.unique()) == 20
    trained = child_run.model.state_dict()[key]
    assert not torch.allclose(trained[new_rows.unique()], before_training["state"][key][new_rows.unique()])
    # and the planted signal on new items is learned by the child, not by the parent
    assert new_item_auc(child, days) > 0.85
    assert new_item_auc(parent, days) < 0.65


def test_config_section_carries_optimizer_state_and_updates_numeric_statistics(tmp_path: Path, days: dict[str, Path], parent: Path) -> None:
    section = {"incremental": {"init_from": str(parent), "numeric": "update", "optimizer_state": "carry"}}
    metrics = train_run(RunConfig.from_dict(config(tmp_path, days, "day2", "day2", **section)), log=lambda _: None)
    assert metrics["incremental"]["optimizer_params_carried"] > 0
    child, old = load_run(tmp_path / "day2").preprocessor, load_run(parent).preprocessor
    assert child.numeric_stats["price"].count == 6000
    assert child.normalizers["price"].center != old.normalizers["price"].center
    assert child.normalizers["price"].center == pytest.approx(child.numeric_stats["price"].mean)
    # a day later, grown from the child: the lineage goes back to the run trained from scratch
    again = train_run(RunConfig.from_dict(config(tmp_path, days, "day3", "valid")), init_from=tmp_path / "day2", log=lambda _: None)
    assert again["incremental"]["lineage"] == [str(parent.resolve()), str((tmp_path / "day2").resolve())]
    assert load_run(tmp_path / "day3").preprocessor.numeric_stats["price"].count == 7500  # running moments of all three days


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"model": {"name": "fm", "params": {}}}, ConfigError, "model: 'fm', but the parent run .* trained 'deepfm'"),
        ({"schema": {**SCHEMA, "tables": {"item": {"dim": 16}}}}, ConfigError, "feature 'hist_item_ids' \\(table 'item'\\): dim changed from 8"),
        (
            {"schema": {**SCHEMA, "features": [*SCHEMA["features"][:3], {"name": "price", "kind": "numeric", "transform": "bucketize", "dim": 8}]}},
            ConfigError,
            "feature 'price': transform changed",
        ),
        ({"schema": {**SCHEMA, "features": SCHEMA["features"][:3]}}, ConfigError, "feature 'price': in the parent run's schema but not in this one"),
    ],
)
def test_a_change_that_cannot_grow_fails_before_any_data_is_read(tmp_path: Path, days: dict[str, Path], parent: Path, change: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        train_run(RunConfig.from_dict({**config(tmp_path, days, "bad", "day2"), **change}), init_from=parent, log=lambda _: None)
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()


def test_a_missing_parent_or_its_own_output_is_refused(tmp_path: Path, days: dict[str, Path], parent: Path) -> None:
    with pytest.raises(RunFolderError, match="does not exist"):
        train_run(RunConfig.from_dict(config(tmp_path, days, "x", "day2")), init_from=tmp_path / "nope", log=lambda _: None)
    with pytest.raises(ConfigError, match="this run's own output folder"):
        train_run(RunConfig.from_dict(config(parent.parent, days, "day1", "day2")), init_from=parent, overwrite=True, log=lambda _: None)


def test_cli_init_from_end_to_end(tmp_path: Path, days: dict[str, Path], parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "day2.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, days, "day2", "day2")))
    assert cli_main(["train", str(path), "--init-from", str(parent), "--set", "trainer.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert f"parent run: {parent.resolve()}; tables grown: item +20 rows (62)" in out
    assert json.loads((tmp_path / "day2" / "model.json").read_text())["parent_run"] == str(parent.resolve())
    assert cli_main(["train", str(path), "--init-from", str(tmp_path / "missing"), "--overwrite"]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_nproc_launch_passes_init_from_to_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.run as torchrun

    from recstack.cli import build_parser
    from recstack.workflows.distributed import launch

    launched = []
    monkeypatch.setattr(torchrun, "run", lambda parsed: launched.append(parsed))
    args = build_parser().parse_args(["train", "c.yaml", "--nproc", "2", "--init-from", "runs/day1"])
    assert launch(args) == 0
    assert launched[0].training_script_args[-2:] == ["--init-from", "runs/day1"]


def test_a_frozen_pretrained_table_grows_with_the_new_files_vectors(tmp_path: Path, days: dict[str, Path]) -> None:
    from recstack.vector_io import VectorTable, write_vectors

    vectors = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    write_vectors(tmp_path / "v1.parquet", VectorTable(ids=[str(i) for i in range(40)], vectors=vectors[:40]))
    write_vectors(tmp_path / "v2.parquet", VectorTable(ids=[str(i) for i in range(60)], vectors=vectors))

    def with_vectors(name: str, train: str, file: str, **extra) -> RunConfig:
        schema = {**SCHEMA, "tables": {"item": {"pretrained": str(tmp_path / file), "trainable": False}}}
        return RunConfig.from_dict({**config(tmp_path, days, name, train, **extra), "schema": schema})

    train_run(with_vectors("p1", "day1", "v1.parquet", trainer={"epochs": 1, "progress": False}), log=lambda _: None)
    metrics = train_run(with_vectors("p2", "day2", "v2.parquet", trainer={"epochs": 1, "progress": False}), init_from=tmp_path / "p1", log=lambda _: None)
    assert metrics["incremental"]["tables"]["item"] == {"rows_before": 42, "rows_after": 62, "added": 20}
    child = load_run(tmp_path / "p2")
    table = child.model.state_dict()["embeddings.tables.item.weight"]
    rows = child.preprocessor.lookups["item"].lookup(pa.array([str(i) for i in range(60)]))
    torch.testing.assert_close(table[rows], torch.from_numpy(vectors), rtol=0, atol=0)  # frozen: the files' rows, old and new


@pytest.mark.slow
def test_a_two_tower_retrieval_run_grows_its_shared_item_table(tmp_path: Path) -> None:
    from recstack.datasets import generate_retrieval

    generate_retrieval(tmp_path, num_users=300, num_items=200, interactions_per_user=12, num_clusters=10, seed=0)
    events = pq.read_table(tmp_path / "train.parquet")
    histories = events.column("hist_item_ids").to_pylist()
    old = pa.array([item < 150 and all(int(h) < 150 for h in history or []) for item, history in zip(events.column("item_id").to_pylist(), histories)])
    pq.write_table(events.filter(old), tmp_path / "day1.parquet")
    pq.write_table(events.filter(pa.compute.invert(old)), tmp_path / "day2.parquet")

    def retrieval(name: str, train: str) -> RunConfig:
        raw = {
            "name": name,
            "data": {
                "train": str(tmp_path / train),
                **{k: str(tmp_path / f"{k}.parquet") for k in ("valid", "test")},
                "catalog": str(tmp_path / "items.parquet"),
                "seen": str(tmp_path / "seen.parquet"),
            },
            "schema": {
                "label": None,
                "group": "user_id",
                "tables": {"item": {"dim": 16}},
                "features": [
                    {"name": "user_id", "kind": "categorical", "side": "user", "dim": 16},
                    {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 20, "side": "user"},
                    {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
                    {"name": "genre", "kind": "categorical", "side": "item", "dim": 8},
                ],
            },
            "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
            "model": {"name": "dssm", "params": {"hidden_dims": [32], "output_activation": "identity"}},
            "loader": {"batch_size": 256, "shuffle_buffer": 10_000},
            "trainer": {"epochs": 2, "lr": 0.01, "progress": False, "monitor": "recall@10"},
            "evaluation": {"ks": [10, 50]},
            "output": str(tmp_path / name),
        }
        return RunConfig.from_dict(raw, base_dir=tmp_path)

    train_run(retrieval("day1", "day1.parquet"), log=lambda _: None)
    metrics = train_run(retrieval("day2", "day2.parquet"), init_from=tmp_path / "day1", log=lambda _: None)
    grown = metrics["incremental"]["tables"]["item"]
    assert grown["added"] >= 40  # items 150..199, none of them in a day-1 event or history
    model = load_run(tmp_path / "day2").model
    collections = [m for m in model.modules() if type(m).__name__ == "EmbeddingCollection"]
    item_tables = {id(c.table(f)) for c in collections for f in ("item_id", "hist_item_ids") if f in c.feature_names}
    assert len(item_tables) == 1  # still one matrix for both towers
    assert metrics["valid"]["recall@50"] > 3 * 50 / 200  # far above a random ranking of 200 items


def test_an_interrupted_incremental_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, days: dict[str, Path], parent: Path) -> None:
    from recstack.training import TrainerCallback

    class InterruptSecondEpoch(TrainerCallback):
        def on_epoch_begin(self, state, control) -> None:  # epoch 1's checkpoint is written by now
            if state.epoch == 1:
                raise KeyboardInterrupt

    straight = tmp_path / "straight"
    straight.mkdir()
    train_run(RunConfig.from_dict(config(straight, days, "day2", "day2")), init_from=parent, log=lambda _: None)
    resumed = RunConfig.from_dict(config(tmp_path, days, "day2", "day2"))
    with pytest.raises(KeyboardInterrupt):
        train_run(resumed, init_from=parent, log=lambda _: None, callbacks=[InterruptSecondEpoch()])
    metrics = train_run(resumed, init_from=parent, resume=True, log=lambda _: None)
    assert metrics["incremental"]["parent_run"] == str(parent.resolve())
    expected = torch.load(straight / "day2" / "model.pt", weights_only=True)
    got = torch.load(tmp_path / "day2" / "model.pt", weights_only=True)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
