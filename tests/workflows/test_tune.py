"""recstack tune: a search beats a planted bad default, a killed tune resumes without repeating
trials, bad search spaces are errors before any trial, and a far worse trial is pruned."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from recstack.cli import main  # noqa: E402
from recstack.config import RunConfig  # noqa: E402
from recstack.errors import ConfigError  # noqa: E402
from recstack.workflows.datasets import write_synthetic_ctr_splits  # noqa: E402
from recstack.workflows.train import train_run  # noqa: E402
from recstack.workflows.tune import tune_run  # noqa: E402

SCHEMA = {
    "label": "label",
    "features": [
        *({"name": f"cat_{i}", "kind": "categorical", "dim": 8} for i in range(4)),
        *({"name": f"num_{i}", "kind": "numeric", "transform": "log1p" if i % 2 == 0 else "none"} for i in range(4)),
    ],
}
LR_SPACE = {"trainer.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tune_data")
    write_synthetic_ctr_splits(folder, rows=(3000, 1000, 1000), seed=0)
    return folder


def _config(tmp_path: Path, data: Path, *, tune: Any = None, lr: float = 1e-6, epochs: int = 1, **extra: Any) -> Path:
    config = {
        "name": "tiny",
        "data": {k: str(data / f"{k}.parquet") for k in ("train", "valid", "test")},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": {"name": "fm"},
        "loader": {"batch_size": 256},
        "trainer": {"epochs": epochs, "lr": lr, "progress": False, "monitor": "auc"},
        "output": str(tmp_path / "runs" / "tiny"),
        **extra,
    }
    if tune is not None:
        config["tune"] = tune
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_search_finds_a_far_better_lr_than_a_planted_bad_default(tmp_path: Path, data: Path) -> None:
    path = _config(tmp_path, data, tune={"params": LR_SPACE, "pruner": "none"})
    default = train_run(RunConfig.from_yaml(path, overrides={"output": str(tmp_path / "default")}), log=lambda _: None)

    result = tune_run(path, trials=3, log=lambda _: None)

    folder = tmp_path / "runs" / "tiny_tune"
    assert result["tune_folder"] == str(folder) and result["complete"] == 3
    assert result["best"]["value"] > default["valid"]["auc"] + 0.05  # lr 1e-6 barely moves the weights
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    assert "tune" not in best and 1e-3 <= best["trainer"]["lr"] <= 1e-1
    assert best["trainer"]["lr"] == result["best"]["params"]["trainer.lr"]
    rerun = train_run(RunConfig.from_yaml(folder / "best_config.yaml", overrides={"output": str(tmp_path / "rerun")}), log=lambda _: None)
    assert rerun["valid"]["auc"] == pytest.approx(result["best"]["value"], abs=1e-6)  # runnable, same seed, same value
    rows = _rows(folder / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["value"]) > 0 and float(r["duration_s"]) > 0 and r["params_trainer.lr"] for r in rows)
    kept = sorted(p.name for p in (folder / "trials").iterdir() if not p.name.startswith("."))
    assert kept == [f"trial_{result['best']['number']:04d}"]  # only the best trial's run folder
    assert (folder / "trials" / kept[0] / "metrics.json").exists()
    assert (folder / "optimization_history.png").stat().st_size > 1000
    assert (folder / "param_importances.png").stat().st_size > 1000


def test_importance_plot_skipped_below_two_completed_trials_and_best_config_paths_absolute(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative config path, as in `recstack tune configs/x.yaml`
    (tmp_path / "configs").mkdir()
    (tmp_path / "data").symlink_to(data)
    config = yaml.safe_load(_config(tmp_path, data, lr=0.01, tune={"params": LR_SPACE, "pruner": "none"}).read_text())
    config.update(data={"dataset": "synthetic_ctr", "dir": "data"}, output="runs/tiny")
    Path("configs/tiny.yaml").write_text(yaml.safe_dump(config))

    result = tune_run("configs/tiny.yaml", trials=1, log=lambda _: None)

    assert result["plots"]["optimization_history.png"] == "written"
    assert result["plots"]["param_importances.png"].startswith("skipped: needs >= 2 completed trials")
    assert not (tmp_path / "runs" / "tiny_tune" / "param_importances.png").exists()
    best = yaml.safe_load((tmp_path / "runs" / "tiny_tune" / "best_config.yaml").read_text())
    assert Path(best["data"]["dir"]).is_absolute() and Path(best["data"]["dir"]) == data.resolve()  # not relative to the tune folder
    assert best["output"] == str((tmp_path / "runs" / "tiny").resolve())


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"trainer.lrr": {"type": "float", "low": 0.001, "high": 0.1}}, "tune.params.trainer.lrr"),
        ({"model.params.no_such_param": [1, 2]}, "tune.params.model.params.no_such_param"),
        ({"trainer.lr": {"type": "float", "low": 0.1, "high": 0.001}}, "tune.params.trainer.lr: low 0.1 > high 0.001"),
        ({"trainer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "tune.params.trainer.lr: a log scale needs low > 0"),
        ({"trainer.optimizer": {"type": "categorical", "choices": []}}, "tune.params.trainer.optimizer.choices: expected a non-empty list"),
        ({"trainer.lr": {"type": "gaussian", "low": 0.1, "high": 1}}, "tune.params.trainer.lr.type: unknown distribution 'gaussian'"),
        ({"trainer.optimizer": ["adam", "adamx"]}, "tune.params.trainer.optimizer: 'adamx'"),
    ],
)
def test_bad_search_space_entry_is_a_config_error_naming_the_key_before_any_trial(tmp_path: Path, data: Path, space: dict, message: str, capsys: pytest.CaptureFixture) -> None:
    path = _config(tmp_path, data, tune={"params": space})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tune_run(path, trials=2, log=lambda _: None)
    assert not (tmp_path / "runs" / "tiny_tune").exists()  # nothing written, no trial run
    assert main(["tune", str(path), "--trials", "2"]) == 2
    assert message in capsys.readouterr().err


def test_missing_tune_section_and_direction_for_another_metric_are_errors(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match="no tune: section"):
        tune_run(_config(tmp_path, data), trials=1)
    with pytest.raises(ConfigError, match="tune.direction: required"):
        tune_run(_config(tmp_path, data, tune={"params": LR_SPACE, "metric": "logloss"}), trials=1)


def test_far_worse_trial_is_pruned(tmp_path: Path, data: Path) -> None:
    path = _config(tmp_path, data, epochs=2, tune={"params": LR_SPACE, "pruner": "median", "startup_trials": 2})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="tiny", direction="maximize")
    for lr in (0.05, 0.03, 1e-3):  # two good trials, then the space's worst corner
        study.enqueue_trial({"trainer.lr": lr})

    result = tune_run(path, trials=3, storage=storage, log=lambda _: None)

    rows = _rows(tmp_path / "runs" / "tiny_tune" / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert rows[2]["pruned_at_epoch"] == "1"  # stopped after its first epoch, not trained to the end
    assert result["pruned"] == 1 and result["best"]["number"] in (0, 1)


def _completed(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            rows = connection.execute("SELECT number FROM trials WHERE state = 'COMPLETE' ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or locked
        return []
    return [number for (number,) in rows]


@pytest.mark.slow
def test_killed_tune_resumes_without_repeating_completed_trials(tmp_path: Path, data: Path) -> None:
    path = _config(tmp_path, data, epochs=2, tune={"params": LR_SPACE, "pruner": "none"})
    folder = tmp_path / "runs" / "tiny_tune"
    command = [sys.executable, "-m", "recstack.cli", "tune", str(path), "--trials", "5", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_completed(folder / "study.db")) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = _completed(folder / "study.db")
    assert len(before) >= 2, process.stderr.read().decode()
    study = optuna.load_study(storage=f"sqlite:///{folder / 'study.db'}", study_name="tiny")
    values_before = {t.number: (t.value, t.params) for t in study.trials if t.number in before}

    assert main(["tune", str(path), "--trials", "5"]) == 0

    study = optuna.load_study(storage=f"sqlite:///{folder / 'study.db'}", study_name="tiny")
    counted = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len([t for t in counted if t.state.name == "COMPLETE"]) == 5  # five in all, not five more
    for number, (value, params) in values_before.items():  # completed trials kept, not re-run
        assert (study.trials[number].value, study.trials[number].params) == (value, params)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    rows = _rows(folder / "trials.csv")
    assert len(rows) == len(study.trials)
    assert not list((folder / "trials").glob(".*.partial"))  # the killed trial's partial run cleaned up


@pytest.mark.slow  # spawns two Python processes that import torch: ~9 s here
def test_jobs_run_trials_in_worker_processes_without_overshooting_the_count(tmp_path: Path, data: Path) -> None:
    path = _config(tmp_path, data, lr=0.01, tune={"params": LR_SPACE, "pruner": "none"})
    result = tune_run(path, trials=3, jobs=2, log=lambda _: None)
    rows = _rows(tmp_path / "runs" / "tiny_tune" / "trials.csv")
    assert result["trials"] == result["complete"] == 3 and sorted(r["number"] for r in rows) == ["0", "1", "2"]
    assert (tmp_path / "runs" / "tiny_tune" / "trials" / f"trial_{result['best']['number']:04d}" / "model.pt").exists()


def test_a_metric_the_validation_does_not_report_stops_the_tune_after_one_trial(tmp_path: Path, data: Path) -> None:
    path = _config(tmp_path, data, lr=0.01, tune={"params": LR_SPACE, "metric": "ndcg", "direction": "maximize"})
    with pytest.raises(ConfigError, match=r"tune\.metric: 'ndcg' is not a validation metric of this run; it reports \[.*'auc'"):
        tune_run(path, trials=3, log=lambda _: None)
    study = optuna.load_study(storage=f"sqlite:///{tmp_path / 'runs' / 'tiny_tune' / 'study.db'}", study_name="tiny")
    assert len(study.trials) == 1  # not three failed trials


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_cleaning_keeps_the_best_of_the_trials_it_sees_even_when_the_study_best_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direction: str
) -> None:
    # --jobs: worker A reads the best, worker B finishes a better trial, A lists the finished
    # trials; a best read apart from that list deleted B's (the new best's) run folder
    from recstack.tuning import study as studies

    study = optuna.create_study(direction=direction)
    values = [0.5, 0.7, 0.6] if direction == "maximize" else [0.5, 0.3, 0.4]
    for value in values:
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    for number in range(3):
        (tmp_path / f"trial_{number:04d}").mkdir()
    stale = study.trials[0]
    monkeypatch.setattr(type(study), "best_trial", property(lambda self: stale))
    studies.clean_trial_folders(study, tmp_path, keep_all=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial_0001"]
