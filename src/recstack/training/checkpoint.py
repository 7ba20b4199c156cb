"""``last.pt``: what goes in it, and writing/reading it atomically without executing pickles.

The two latest checkpoints are kept (``last.pt`` and ``previous.pt``); each is read back after it
is written, and :func:`load_checkpoint` falls back to ``previous.pt`` when ``last.pt`` is missing
or damaged (a truncated copy, a full disk), naming the file and the problem.

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
import warnings
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import torch

from recstack.errors import RecstackError

from recstack.training.rng import capture_rng
from recstack.training.run import TrainingRun
from recstack.training.state import TrainerState

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_NAME",
    "CheckpointError",
    "PREVIOUS_CHECKPOINT_NAME",
    "checkpoint_payload",
    "load_checkpoint",
    "restore_run",
    "save_checkpoint",
]

CHECKPOINT_NAME = "last.pt"
PREVIOUS_CHECKPOINT_NAME = "previous.pt"  # the checkpoint before last.pt, kept as a fallback
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(RecstackError):
    """No intact checkpoint could be read; the message names each file tried and its problem."""


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
    """Write ``path`` atomically, verify it, and keep the checkpoint it replaces as ``previous.pt``.

    The new checkpoint streams to a temporary file beside ``path`` (fsynced) while a CRC-32 of the
    bytes is taken; the file is then read back in chunks and must give the same length and CRC. A
    payload whose structure (the types it holds, nested; tensor dtypes) this process has not saved
    before is also loaded with ``weights_only=True``, as a resume would, so a value resume could
    not read fails here, not at resume. That load is most of a save's cost (~0.1 s for SASRec's
    payload) and depends only on the structure, which stays the same from save to save. Only then
    does the file take ``path``'s place (``os.replace`` is atomic); the checkpoint it replaces
    becomes ``previous.pt``. A crash at any point leaves at least one intact checkpoint. Memory:
    one chunk beyond the payload itself (nothing is serialized into memory first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    payload = {"version": CHECKPOINT_FORMAT_VERSION, **payload}
    try:
        with open(tmp, "wb") as file:
            written = _Checksummed(file)
            torch.save(payload, written)
            file.flush()
            os.fsync(file.fileno())
        if _checksum(tmp) != (written.size, written.crc):
            raise CheckpointError(f"{tmp}: the checkpoint read back differs from what was written")
        structure = _structure(payload)
        if structure not in _LOADABLE_STRUCTURES:
            _read(tmp)
            _LOADABLE_STRUCTURES.add(structure)
    except BaseException:  # a failed write (full disk, unpicklable value) or check: no temporary file left
        tmp.unlink(missing_ok=True)
        raise
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT_NAME))
    os.replace(tmp, path)


class _Checksummed:
    """A binary file that keeps the size and CRC-32 of what is written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.size, self.crc = file, 0, 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _checksum(path: Path, chunk_bytes: int = 1 << 20) -> tuple[int, int]:
    """``(size, CRC-32)`` of the file's bytes as read back, a chunk at a time."""
    size, crc = 0, 0
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    return size, crc


# structures of payloads this process has loaded back with weights_only=True (see save_checkpoint)
_LOADABLE_STRUCTURES: set[tuple] = set()  # grows by one entry per payload layout a process saves


def _structure(value: Any) -> tuple:
    """What decides whether ``torch.load(weights_only=True)`` reads a value back: the types it
    holds, nested (tensors by dtype and layout); not its numbers, keys or lengths, so a log that
    grows each epoch keeps its structure."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, value.layout)
    if isinstance(value, dict):
        return (type(value), frozenset((type(k), _structure(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value), frozenset(_structure(v) for v in value))
    return (type(value),)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``path`` onto the CPU, or ``previous.pt`` beside it when ``path`` is missing or damaged.

    :func:`restore_run` moves tensors where they belong.

    Raises:
        CheckpointError: neither file is an intact checkpoint; the message names both and says
            how to restart.
    """
    problems = []
    for candidate in (path, path.with_name(PREVIOUS_CHECKPOINT_NAME)):
        if not candidate.exists():
            problems.append(f"{candidate}: missing")
            continue
        try:
            payload = _read(candidate)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if candidate != path:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {candidate}", stacklevel=2)
        return payload
    raise CheckpointError(
        "no intact checkpoint to resume from (" + "; ".join(problems) + "); "
        "restart the run without --resume (with --overwrite to discard the interrupted run)"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, bad pickle opcode, empty file: all mean "damaged"
        raise CheckpointError(f"{path}: damaged checkpoint ({type(error).__name__}: {_first_line(error)})") from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r}, this recstack reads {CHECKPOINT_FORMAT_VERSION}")
    return payload


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""
