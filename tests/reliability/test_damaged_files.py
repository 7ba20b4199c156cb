"""Damaged or missing run files give one line naming the file; --resume falls back to the
previous intact checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recstack.cli import main
from recstack.export.run_folder import load_run
from recstack.training.checkpoint import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME

from .conftest import write_config


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "truncated model.pt": lambda run: truncate(run / "model.pt"),
    "empty model.pt": lambda run: (run / "model.pt").write_bytes(b""),
    "truncated preprocessor.json": lambda run: truncate(run / "preprocessor.json"),
    "empty preprocessor.json": lambda run: (run / "preprocessor.json").write_text(""),
    "model.json not JSON": lambda run: (run / "model.json").write_text("{name: "),
    "missing model.pt": lambda run: (run / "model.pt").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_evaluate_names_the_damaged_file_in_one_line(run_copy: Path, ctr_data: Path, damage: str, capsys) -> None:
    DAMAGE[damage](run_copy)
    assert main(["evaluate", str(run_copy), "--data", str(ctr_data / "test.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert damage.split()[-1] in err


def test_weights_of_another_run_are_refused_not_loaded_silently(run_copy: Path) -> None:
    state = torch.load(run_copy / "model.pt", weights_only=True)
    name = next(key for key in state if "embedding" in key or "table" in key)
    state[name] = torch.zeros(state[name].shape[0] + 3, *state[name].shape[1:])
    torch.save(state, run_copy / "model.pt")
    from recstack.errors import RunFolderError

    with pytest.raises(RunFolderError, match="does not match"):
        load_run(run_copy)


@pytest.mark.parametrize("command", ["evaluate", "serve"])
def test_a_missing_run_folder_is_one_line(tmp_path: Path, ctr_data: Path, command: str, capsys) -> None:
    missing = tmp_path / "runs" / "nope"
    if command == "evaluate":
        argv = ["evaluate", str(missing), "--data", str(ctr_data / "test.parquet")]
    else:
        argv = ["serve", "--retrieval", str(missing), "--ranker", str(missing), "--catalog", str(tmp_path / "items.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"run folder {missing} does not exist" in err


def test_a_bad_schema_yaml_in_recstack_data_is_one_line(tmp_path: Path, ctr_data: Path, capsys) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("features: [a, b\n  label: x\n")
    assert main(["data", str(schema), "--data", str(ctr_data / "test.parquet")]) == 2
    err = capsys.readouterr().err
    assert "schema.yaml" in err and "not a valid YAML schema" in err and len(err.strip().splitlines()) == 1


def _resume_config(run: Path, ctr_data: Path) -> Path:
    return write_config(run.parent.parent, ctr_data, trainer={"epochs": 3, "lr": 0.01, "progress": False})


def test_resume_falls_back_to_the_previous_checkpoint_when_last_is_truncated(run_copy: Path, ctr_data: Path) -> None:
    checkpoints = run_copy / "checkpoints"
    assert (checkpoints / CHECKPOINT_NAME).exists() and (checkpoints / PREVIOUS_CHECKPOINT_NAME).exists()
    truncate(checkpoints / CHECKPOINT_NAME)
    with pytest.warns(UserWarning, match="previous checkpoint"):
        assert main(["train", str(_resume_config(run_copy, ctr_data)), "--resume", "--json"]) == 0
    import json

    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3  # resumed after epoch 1 (previous.pt), trained epochs 2 and 3


def test_resume_with_every_checkpoint_damaged_says_how_to_restart(run_copy: Path, ctr_data: Path, capsys) -> None:
    before = (run_copy / "model.pt").read_bytes()
    for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME):
        truncate(run_copy / "checkpoints" / name, 0.3)
    assert main(["train", str(_resume_config(run_copy, ctr_data)), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: damaged checkpoint" in err and "previous.pt: damaged checkpoint" in err
    assert "without --resume" in err
    assert (run_copy / "model.pt").read_bytes() == before  # the complete run is untouched


def test_the_cli_prints_no_traceback_for_a_truncated_model(run_copy: Path, ctr_data: Path) -> None:
    truncate(run_copy / "model.pt")
    result = subprocess.run(
        [sys.executable, "-m", "recstack.cli", "evaluate", str(run_copy), "--data", str(ctr_data / "test.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "model.pt: damaged weights file" in result.stderr
