"""A small trained ranking run shared by the reliability tests (each test works on a copy)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from recstack.cli import main
from recstack.workflows.datasets import write_synthetic_ctr_splits

SCHEMA = {
    "label": "label",
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 4},
        {"name": "item_id", "kind": "categorical", "side": "item", "dim": 4},
        {"name": "cat_0", "kind": "categorical", "dim": 4},
        {"name": "num_0", "kind": "numeric"},
    ],
}


@pytest.fixture(scope="session")
def ctr_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reliability_ctr")
    write_synthetic_ctr_splits(folder, rows=(1500, 400, 400), seed=0)
    return folder


def write_config(folder: Path, ctr_data: Path, **changes) -> Path:
    """A two-epoch DeepFM config writing ``folder/runs/rel``; ``changes`` replace top-level keys."""
    config = {
        "name": "rel",
        "data": {split: str(ctr_data / f"{split}.parquet") for split in ("train", "valid", "test")},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": {"name": "deepfm", "params": {"hidden_dims": [8]}},
        "loader": {"batch_size": 256},
        "trainer": {"epochs": 2, "lr": 0.01, "progress": False},
        "output": str(folder / "runs" / "rel"),
        **changes,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, ctr_data: Path) -> Path:
    folder = tmp_path_factory.mktemp("reliability_run")
    assert main(["train", str(write_config(folder, ctr_data))]) == 0
    return folder / "runs" / "rel"


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run at ``tmp_path/runs/rel`` (the config's output)."""
    target = tmp_path / "runs" / "rel"
    shutil.copytree(trained_run, target)
    return target


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: equal digests mean a byte-identical folder."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
