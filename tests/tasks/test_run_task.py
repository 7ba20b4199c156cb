"""A run saves its task's spec in model.json; predict / evaluate / serving rebuild it from there
(task_from_run), and run folders written before the registry (a flat task dict) still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, RunFolderError
from recstack.export.run_folder import load_run, task_from_run
from recstack.tasks import BinaryClassificationTask, TaskType
from recstack.workflows.predict import evaluate_run, score_rows
from recstack.workflows.train import train_run


def write_rows(path: Path, rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 20, rows)
    label = (rng.random(rows) < np.where(item < 10, 0.7, 0.2)).astype(int)
    path.write_text("item,x,click\n" + "".join(f"{i},{v:.3f},{c}\n" for i, v, c in zip(item, rng.normal(size=rows), label)))
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run_task")
    config = {
        "name": "t",
        "data": {"train": write_rows(folder / "train.csv", 400, 0), "valid": write_rows(folder / "valid.csv", 200, 1)},
        "schema": {"label": "click", "features": [{"name": "item", "kind": "categorical", "dim": 4}, {"name": "x", "kind": "numeric"}]},
        "task": {"type": "binary", "pos_weight": 1.5},
        "model": {"name": "lr"},
        "loader": {"batch_size": 64},
        "trainer": {"epochs": 1, "progress": False},
        "output": str(folder / "run"),
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    train_run(RunConfig.from_yaml(path))
    return folder / "run"


def test_model_json_holds_the_task_spec_and_rebuilds_the_trained_task(run_dir: Path) -> None:
    saved = json.loads((run_dir / "model.json").read_text())["task"]
    assert saved == {"type": "binary", "name": "binary", "params": {"pos_weight": 1.5}}
    run = load_run(run_dir)
    assert run.task.type is TaskType.BINARY
    assert task_from_run(run) == BinaryClassificationTask(pos_weight=1.5)


def test_a_run_folder_with_the_old_task_dict_still_predicts(run_dir: Path, tmp_path: Path) -> None:
    before = score_rows(load_run(run_dir), DataSource(paths=(str(run_dir.parent / "valid.csv"),)))
    spec_path = run_dir / "model.json"
    spec = json.loads(spec_path.read_text())
    original = spec_path.read_text()
    try:
        for old in ({"type": "binary", "pos_weight": 1.5}, None):  # the flat form; no task at all
            if old is None:
                spec.pop("task")
            else:
                spec["task"] = old
            spec_path.write_text(json.dumps(spec))
            run = load_run(run_dir)
            assert isinstance(task_from_run(run), BinaryClassificationTask)
            np.testing.assert_array_equal(score_rows(run, DataSource(paths=(str(run_dir.parent / "valid.csv"),))), before)
        metrics = evaluate_run(run_dir, DataSource(paths=(str(run_dir.parent / "valid.csv"),)), write=False)
        assert 0.0 <= metrics["auc"] <= 1.0
    finally:
        spec_path.write_text(original)


def test_a_damaged_task_spec_names_model_json(run_dir: Path) -> None:
    spec_path = run_dir / "model.json"
    original = spec_path.read_text()
    try:
        spec = json.loads(original)
        spec["task"] = {"type": "binary", "pos_wieght": 2}
        spec_path.write_text(json.dumps(spec))
        with pytest.raises(RunFolderError, match=r"model\.json: damaged task spec: task\.pos_wieght: unknown parameter"):
            load_run(run_dir)
    finally:
        spec_path.write_text(original)


def test_a_config_with_a_bad_task_fails_before_training(tmp_path: Path) -> None:
    config = {
        "data": {"train": write_rows(tmp_path / "train.csv", 10, 0)},
        "schema": {"label": "click", "features": [{"name": "item", "kind": "categorical"}]},
        "task": {"type": "binary", "pos_weight": -1},
        "model": {"name": "lr"},
    }
    with pytest.raises(ConfigError, match=r"task\.pos_weight: must be > 0"):
        RunConfig.from_dict(config, base_dir=tmp_path)
    config["task"] = {"type": "binary", "target_column": "item"}
    with pytest.raises(ConfigError, match=r"task\.target_column: applies to retrieval tasks"):
        RunConfig.from_dict(config, base_dir=tmp_path)
