"""`recstack train` end to end on small synthetic data: run folder, metrics, reload, CLI jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recstack.cli import main as cli_main
from recstack.config import RunConfig
from recstack.errors import ConfigError
from recstack.export.run_folder import load_run
from recstack.workflows.datasets import write_synthetic_ctr_splits
from recstack.workflows.predict import score_rows
from recstack.data.sources import DataSource
from recstack.workflows.train import train_run

SCHEMA = {
    "label": "label",
    "group": "user_id",
    "tables": {"item": {"dim": 8}, "cat": {"dim": 8}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 8},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "item_cat", "kind": "categorical", "table": "cat", "side": "item"},
        {"name": "cat_0", "kind": "categorical", "dim": 8},
        {"name": "cat_1", "kind": "categorical", "dim": 8},
        {"name": "num_0", "kind": "numeric", "transform": "log1p"},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 20},
        {"name": "hist_cat", "kind": "sequence", "table": "cat", "maxlen": 20},
    ],
}


@pytest.fixture(scope="module")
def ctr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctr")
    write_synthetic_ctr_splits(folder, rows=(6000, 2000, 2000), seed=0)
    return folder


def write_config(folder: Path, ctr_dir: Path, model: dict, **extra) -> Path:
    config = {
        "name": "t",
        "data": {k: str(ctr_dir / f"{k}.parquet") for k in ("train", "valid", "test")},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": model,
        "loader": {"batch_size": 256, "shuffle_buffer": 4000},
        "trainer": {"epochs": 3, "lr": 0.003, "patience": 2, "progress": False},
        "output": str(folder / "run"),
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_train_writes_a_complete_run_folder_that_reloads_to_identical_predictions(tmp_path: Path, ctr_dir: Path) -> None:
    config = RunConfig.from_yaml(write_config(tmp_path, ctr_dir, {"name": "deepfm", "params": {"hidden_dims": [32, 16]}}))
    metrics = train_run(config, log=lambda _: None)
    run = config.output
    for name in ("config.yaml", "preprocessor.json", "model.json", "model.pt", "metrics.json", "learning_curve.png", "manifest.json"):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").iterdir())
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved["test"]) >= {"auc", "logloss", "gauc"}
    assert saved["test"]["auc"] > 0.6
    assert saved["samples_per_second"] > 0 and saved["train_seconds"] > 0
    # validation time is counted apart: the step rate leaves it out, so it is the higher of the two
    assert 0 < saved["evaluation_seconds"] < saved["train_seconds"]
    assert saved["step_samples_per_second"] > saved["samples_per_second"]
    # the training rows were read and transformed once, before the clock (the stream caches them)
    assert saved["data_preparation_seconds"] > 0
    # reload (weights_only) and score the test file: identical to the trained model's predictions
    loaded = load_run(run)
    probs = score_rows(loaded, DataSource(paths=(str(ctr_dir / "test.parquet"),)))
    again = score_rows(load_run(run), DataSource(paths=(str(ctr_dir / "test.parquet"),)))
    np.testing.assert_array_equal(probs, again)
    assert metrics["test"]["auc"] == pytest.approx(saved["test"]["auc"])


@pytest.mark.slow
def test_cli_evaluate_and_predict_on_a_new_file(tmp_path: Path, ctr_dir: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_config(tmp_path, ctr_dir, {"name": "lr"}, trainer={"epochs": 1, "progress": False})
    assert cli_main(["train", str(path)]) == 0
    run = tmp_path / "run"
    assert cli_main(["evaluate", str(run), "--data", str(ctr_dir / "test.parquet")]) == 0
    assert "auc" in capsys.readouterr().out
    out = tmp_path / "scores.parquet"
    assert cli_main(["predict", str(run), "--data", str(ctr_dir / "test.parquet"), "--output", str(out)]) == 0
    import pyarrow.parquet as pq

    scores = pq.read_table(out).column("score").to_numpy()
    assert scores.shape == (2000,) and ((scores > 0) & (scores < 1)).all()


def test_bad_configs_name_the_key(tmp_path: Path, ctr_dir: Path) -> None:
    path = write_config(tmp_path, ctr_dir, {"name": "deepfm", "params": {"hiden_dims": [8]}})
    config = RunConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="model.params.hiden_dims"):
        train_run(config, log=lambda _: None)
    with pytest.raises(ConfigError, match="loader.batch_size"):
        RunConfig.from_yaml(path, overrides={"loader.batch_size": 0})
    with pytest.raises(ConfigError, match="loader.cache_max_mb"):
        RunConfig.from_yaml(path, overrides={"loader.cache_max_mb": -1})
    with pytest.raises(ConfigError, match="trainer|lr"):
        train_run(RunConfig.from_yaml(path, overrides={"trainer.lr": -1}), log=lambda _: None)
    with pytest.raises(ConfigError, match="unknown top-level"):
        RunConfig.from_yaml(path, overrides={"optimiser": "adam"})
    with pytest.raises(ConfigError, match="model.name"):
        train_run(RunConfig.from_yaml(path, overrides={"model.name": "nope"}), log=lambda _: None)


def test_skipped_bad_rows_are_counted_in_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def write(split: str, rows: int, bad_numbers: list[int]) -> Path:
        lines = ["user_id,item_id,num_0,label"]
        for r in range(rows):
            num = "n/a" if r in bad_numbers else f"{rng.normal():.3f}"
            lines.append(f"u{rng.integers(20)},i{rng.integers(30)},{num},{int(rng.random() < 0.5)}")
        lines[6] += ",extra"  # one row with a field too many
        path = tmp_path / f"{split}.csv"
        path.write_text("\n".join(lines) + "\n")
        return path

    config = {
        "name": "skips",
        "data": {
            "train": {"path": str(write("train", 600, [10, 20, 30])), "skip_bad_rows": True},
            "valid": {"path": str(write("valid", 200, [10, 20])), "skip_bad_rows": True},
        },
        "schema": {
            "label": "label",
            "features": [
                {"name": "user_id", "kind": "categorical", "dim": 4},
                {"name": "item_id", "kind": "categorical", "dim": 4},
                {"name": "num_0", "kind": "numeric"},
            ],
        },
        "task": {"type": "binary"},
        "model": {"name": "lr"},
        "loader": {"batch_size": 128},
        "trainer": {"epochs": 1, "progress": False},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    logged: list[str] = []
    metrics = train_run(RunConfig.from_yaml(path), log=logged.append)
    assert metrics["skipped_bad_rows"] == 4  # 3 unparseable numbers + 1 wrong field count, counted once
    assert metrics["valid"]["skipped_bad_rows"] == 3
    assert any("dropped 4 bad row(s)" in line for line in logged)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_bad_rows"] == 4


def test_the_streams_transform_only_the_features_the_model_reads(tmp_path: Path, ctr_dir: Path, monkeypatch) -> None:
    """A schema declaring histories and a model naming three features: training, validation and
    test batches hold those three (and the labels), and the run still predicts from full rows."""
    from recstack.data.preprocessor import Preprocessor

    seen: list[tuple[str, ...] | None] = []
    transform = Preprocessor.transform

    def spy(self, chunk, **kwargs):
        batch = transform(self, chunk, **kwargs)
        seen.append(tuple(sorted({*batch.ids, *batch.sequences, *batch.dense})))
        return batch

    monkeypatch.setattr(Preprocessor, "transform", spy)
    model = {"name": "deepfm", "params": {"hidden_dims": [16], "features": ["user_id", "item_id", "num_0"]}}
    metrics = train_run(RunConfig.from_yaml(write_config(tmp_path, ctr_dir, model, trainer={"epochs": 2, "progress": False})), log=lambda _: None)
    assert metrics["test"]["auc"] > 0.5
    assert seen and set(seen) == {("item_id", "num_0", "user_id")}
    monkeypatch.setattr(Preprocessor, "transform", transform)
    run = load_run(tmp_path / "run")
    scores = score_rows(run, DataSource(paths=(str(ctr_dir / "test.parquet"),)))
    assert len(scores) == 2000 and np.isfinite(scores).all()
    import pyarrow.parquet as pq  # a file to score needs only the read features' columns

    pq.write_table(pq.read_table(ctr_dir / "test.parquet", columns=["user_id", "item_id", "num_0"]), tmp_path / "narrow.parquet")
    np.testing.assert_array_equal(score_rows(run, DataSource(paths=(str(tmp_path / "narrow.parquet"),))), scores)


def test_retrieval_models_and_runs_dropping_bad_rows_read_every_feature(tmp_path: Path, ctr_dir: Path) -> None:
    from recstack.models import build_model
    from recstack.workflows.tasks import features_read

    model = {"name": "deepfm", "params": {"features": ["user_id", "item_id"]}}
    config = RunConfig.from_yaml(write_config(tmp_path, ctr_dir, model))
    ranker = build_model("deepfm", _fitted_map(config), model["params"])
    assert features_read(config, ranker, model["params"]) == ("user_id", "item_id")
    assert features_read(config, ranker, {}) is None  # no feature list: the model reads them all
    dropping = RunConfig.from_yaml(write_config(tmp_path, ctr_dir, model, data={
        "train": {"path": str(ctr_dir / "train.parquet"), "skip_bad_rows": True}, "valid": str(ctr_dir / "valid.parquet")}))  # fmt: skip
    assert features_read(dropping, ranker, model["params"]) is None
    two_towers = {"features": ["user_id", "item_id"], "user_features": ["user_id"], "item_features": ["item_id"], "hidden_dims": [8]}
    dssm = build_model("dssm", _fitted_map(config), two_towers)
    assert features_read(config, dssm, two_towers) is None


def _fitted_map(config: RunConfig):
    from recstack.data.preprocessor import Preprocessor

    return Preprocessor(config.schema).fit(config.data.train).feature_map()
