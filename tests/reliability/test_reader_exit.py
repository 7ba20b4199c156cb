"""A data error exits with code 2 every time: no CSV reader is left for Arrow's threads to free
while the interpreter shuts down (that aborted ~1 run in 6 with "terminate called without an
active exception", exit 134, after a missing-column error)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from .conftest import write_config

# Importing torch first (as every recstack command does) is what made the abort likely.
READ = """
import sys
import torch
from recstack.data.sources import DataSource
from recstack.errors import DataError
source = DataSource(paths=(sys.argv[1],), skip_bad_rows=sys.argv[2] == "skip")
try:
    for chunk in source.chunks(columns=["user_id", "num_0", "label"]):
        pass
except DataError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
"""


def csv_without_num_0(path: Path, rows: int = 20_000) -> Path:
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "user_id": rng.integers(0, 500, rows),
            "item_id": rng.integers(0, 300, rows),
            "cat_0": rng.integers(0, 20, rows),
            "label": rng.integers(0, 2, rows),
        }
    )
    pacsv.write_csv(table, path)
    return path


def run_all(commands: list[list[str]], parallel: int = 4) -> list[subprocess.CompletedProcess]:
    done: list[subprocess.CompletedProcess] = []
    for start in range(0, len(commands), parallel):
        running = [
            (command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for command in commands[start : start + parallel]
        ]
        for command, process in running:
            out, err = process.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


def assert_clean_data_error(result: subprocess.CompletedProcess, path: Path) -> None:
    assert "terminate called" not in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    assert "missing column" in result.stderr and "num_0" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # 12 interpreters importing torch: ~15-35 s on 2 cores
def test_a_missing_column_exits_2_every_time(tmp_path: Path) -> None:
    path = csv_without_num_0(tmp_path / "train.csv")
    commands = [[sys.executable, "-c", READ, str(path), mode] for mode in ("strict", "skip") * 6]
    for result in run_all(commands):
        assert_clean_data_error(result, path)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "valid"])
def test_train_on_a_csv_lacking_a_column_exits_2_every_time(tmp_path: Path, ctr_data: Path, split: str) -> None:
    good = tmp_path / "good.csv"
    columns = ["user_id", "item_id", "cat_0", "num_0", "label"]
    pacsv.write_csv(pq.read_table(ctr_data / "train.parquet", columns=columns), good)
    bad = csv_without_num_0(tmp_path / "bad.csv")
    data = {"train": str(good), "valid": str(good), "test": str(good), split: str(bad)}
    config = write_config(tmp_path, ctr_data, data=data)
    command = [sys.executable, "-c", "import sys; from recstack.cli import main; sys.exit(main(sys.argv[1:]))"]
    # each run its own folder: two runs at once on one folder would meet its lock, not the data error
    runs = [[*command, "train", str(config), "--set", f"output={tmp_path / 'runs' / f'rel{i}'}"] for i in range(6)]
    for result in run_all(runs, parallel=2):
        assert_clean_data_error(result, bad)
