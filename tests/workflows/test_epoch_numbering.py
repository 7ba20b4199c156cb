"""Epochs a user reads count from 1: metrics.json's best_epoch agrees with epochs_run and with the
learning-curve plot; the TensorBoard steps (optimizer steps) are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recstack.config import RunConfig
from recstack.workflows.datasets import write_synthetic_ctr_splits
from recstack.workflows.train import train_run

SCHEMA = {
    "label": "label",
    "features": [
        {"name": "item_id", "kind": "categorical", "dim": 4},
        {"name": "cat_0", "kind": "categorical", "dim": 4},
        {"name": "num_0", "kind": "numeric", "transform": "log1p"},
    ],
}


def test_best_epoch_in_metrics_json_counts_from_one_like_epochs_run(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_synthetic_ctr_splits(tmp_path / "data", rows=(1500, 500, 500), seed=0)
    config = {
        "data": {k: str(tmp_path / "data" / f"{k}.parquet") for k in ("train", "valid")},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": {"name": "lr"},
        "loader": {"batch_size": 256},
        "trainer": {"epochs": 3, "lr": 0.01, "progress": False, "monitor": "auc"},
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_config = RunConfig.from_yaml(tmp_path / "config.yaml")
    train_run(run_config, log=lambda _: None)

    saved = json.loads((run_config.output / "metrics.json").read_text())
    events = EventAccumulator(str(run_config.output / "tensorboard"))
    events.Reload()
    aucs = [event.value for event in events.Scalars("eval/auc")]  # one per epoch, in order
    assert saved["epochs_run"] == len(aucs) == 3
    assert saved["best_epoch"] == 1 + max(range(3), key=lambda i: (aucs[i], -i))  # the first best, from 1
    assert 1 <= saved["best_epoch"] <= saved["epochs_run"]
