"""``last.pt``: what goes in it, and writing/reading it atomically without executing pickles.

A checkpoint is a dict of tensors and plain Python values only (no NumPy objects, no dataclass
instances), so :func:`load_checkpoint` can use ``torch.load(weights_only=True)``::

    {
        "version": 1,
        "model": state_dict,                     # the latest weights
        "best_weights": state_dict | None,       # weights of the best epoch on config.monitor
        "optimizers": [state_dict, ...],         # dense, then sparse
        "schedulers": [state_dict, ...],
        "scaler": state_dict,                    # GradScaler ({} when fp16 is off)
        "state": TrainerState.to_dict(),         # includes epoch and epoch_step (batches consumed)
        "callbacks": {class name: [state, ...]},
        "rng": {"epoch_start": rng, "current": rng | None},
    }

Resuming replays the interrupted epoch exactly: restore ``rng["epoch_start"]`` and call
``train_batches(epoch)`` (so even a shuffle drawn from the global RNG repeats), discard the
``epoch_step`` batches already trained on, then restore ``rng["current"]``, the RNG right after
the last trained step. A checkpoint taken at an epoch end has no "current": the next epoch
starts from "epoch_start".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from recstack.training.rng import capture_rng
from recstack.training.run import TrainingRun
from recstack.training.state import TrainerState

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "checkpoint_payload",
    "load_checkpoint",
    "restore_run",
    "save_checkpoint",
]

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT_VERSION = 1


def checkpoint_payload(run: TrainingRun, callback_states: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to continue ``run`` as if it had never stopped."""
    state = run.state
    state.epoch_loss_sum = run.epoch_loss.item()
    current_rng = capture_rng()
    at_epoch_start = state.epoch_step == 0
    return {
        "model": run.model.state_dict(),
        "best_weights": run.best_weights,
        "optimizers": [optimizer.state_dict() for optimizer in run.optimizers],
        "schedulers": [scheduler.state_dict() for scheduler in run.schedulers],
        "scaler": run.scaler.state_dict(),
        "state": state.to_dict(),
        "callbacks": callback_states,
        "rng": {
            "epoch_start": current_rng if at_epoch_start else run.epoch_rng,
            "current": None if at_epoch_start else current_rng,
        },
    }


def restore_run(run: TrainingRun, payload: dict[str, Any]) -> None:
    """Load ``payload`` into a freshly built ``run`` (same model and optimizer settings)."""
    if len(payload["optimizers"]) != len(run.optimizers) or len(payload["schedulers"]) != len(
        run.schedulers
    ):
        raise ValueError("the checkpoint was saved with other optimizer or scheduler settings")
    run.model.load_state_dict(payload["model"])
    for optimizer, saved in zip(run.optimizers, payload["optimizers"]):
        optimizer.load_state_dict(saved)  # moves the moments to the parameters' device
    for scheduler, saved in zip(run.schedulers, payload["schedulers"]):
        scheduler.load_state_dict(saved)
    if payload["scaler"] and run.scaler.is_enabled():
        run.scaler.load_state_dict(payload["scaler"])
    num_epochs = run.state.num_epochs  # the config may extend training
    run.state = TrainerState.from_dict(payload["state"])
    run.state.num_epochs = num_epochs
    run.control.should_stop = run.state.stopped_early
    run.epoch_loss.fill_(run.state.epoch_loss_sum)
    run.best_weights = payload["best_weights"]
    run.epoch_rng = payload["rng"]["epoch_start"]
    run.resume_rng = payload["rng"]["current"]
    run.resuming = True


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash mid-write leaves the previous checkpoint intact: ``os.replace`` is atomic.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        torch.save({"version": CHECKPOINT_FORMAT_VERSION, **payload}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; :func:`restore_run` moves tensors where they belong."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    version = payload.get("version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {version!r}, "
            f"this recstack reads {CHECKPOINT_FORMAT_VERSION}"
        )
    return payload
