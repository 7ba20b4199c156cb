"""kill -9 during `recstack train`, then `--resume`: the run completes with exactly the weights of
an uninterrupted run, and the previous complete run is never touched meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import folder_digest, write_config

pytestmark = pytest.mark.slow

TRAINER = {"epochs": 3, "lr": 0.01, "progress": False, "checkpoint_every_steps": 10}


def _train(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recstack.cli", "train", str(config), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path, ctr_data: Path, run_copy: Path) -> None:
    loader = {"batch_size": 16}
    (tmp_path / "reference").mkdir()
    reference = write_config(tmp_path / "reference", ctr_data, trainer=TRAINER, loader=loader)
    assert _train(reference).wait(timeout=300) == 0

    previous = folder_digest(run_copy)  # a complete run of the same name, to be replaced
    config = write_config(tmp_path, ctr_data, trainer=TRAINER, loader=loader)
    partial = run_copy.parent / ".rel.partial"
    process = _train(config, "--overwrite")
    deadline = time.monotonic() + 240
    while not (partial / "checkpoints" / "previous.pt").exists():  # two checkpoints written: mid-run
        assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert folder_digest(run_copy) == previous  # the complete run was never touched

    assert _train(config, "--resume").wait(timeout=300) == 0
    assert not partial.exists()
    expected = torch.load(tmp_path / "reference" / "runs" / "rel" / "model.pt", weights_only=True)
    resumed = torch.load(run_copy / "model.pt", weights_only=True)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
