"""A run folder is written beside its final place and moved there only when it is complete.

``recstack train`` writes everything (config, preprocessor, checkpoints, logs, weights, metrics)
into ``runs/.NAME.partial/``; when the run has finished, the partial folder is renamed to
``runs/NAME/`` in one step. A run that fails or is killed therefore never touches an existing
``runs/NAME/``, and the partial folder keeps its checkpoints for ``--resume``::

    runs/
      ml100k_din/              the last complete run (untouched until a new one completes)
      .ml100k_din.partial/     the run in progress, or an interrupted one (--resume continues it)
      .ml100k_din.lock         held while a process trains this run

Rules (checked before any work starts, so a refused run has written nothing):

- a fresh run refuses to replace an existing run folder (an empty folder is fine) unless
  ``overwrite`` is set;
- a run that fails with an error deletes its partial folder unless it holds a checkpoint; one
  that was killed or failed after a checkpoint keeps it, and a fresh run then refuses to start
  over it (its checkpoints would be lost) unless ``overwrite`` is set; ``resume`` continues it;
- ``resume`` of a complete run copies it to the partial folder and continues there (training may
  be extended by a larger ``trainer.epochs``), so the complete run stays intact until the
  resumed one completes;
- two processes never train the same run folder at once (an exclusive lock).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO

from recstack.errors import RunFolderError
from recstack.export.run_folder import RunPaths
from recstack.training.checkpoint import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME

__all__ = ["RunFolderError", "StagedRun", "StartMode"]


class StartMode(str, Enum):
    FRESH = "fresh"  # an empty partial folder
    CONTINUE = "continue"  # the interrupted partial folder, as it is
    FROM_COMPLETE = "from_complete"  # a copy of the complete run, to resume


@dataclass(frozen=True)
class StagedRun:
    """Where a run is written while it trains (``partial``) and where it ends up (``final``)."""

    final: Path

    @property
    def partial(self) -> Path:
        return self.final.parent / f".{self.final.name}.partial"

    @property
    def lock_file(self) -> Path:
        return self.final.parent / f".{self.final.name}.lock"

    @property
    def paths(self) -> RunPaths:
        """The paths a training run writes to: inside the partial folder."""
        return RunPaths(self.partial)

    def plan(self, *, resume: bool, overwrite: bool) -> StartMode:
        """How this run starts; raises :class:`RunFolderError` (having written nothing) when it cannot."""
        if resume:
            if _has_checkpoint(self.partial):
                return StartMode.CONTINUE
            if _has_checkpoint(self.final):
                return StartMode.FROM_COMPLETE
            raise RunFolderError(
                f"--resume: no checkpoint to continue in {self.partial} or {self.final}; "
                "start the run without --resume"
            )
        if self.partial.exists() and not overwrite:
            raise RunFolderError(
                f"an interrupted run of {self.final.name!r} is in {self.partial}: continue it with --resume, "
                "or start over with --overwrite (its checkpoints are then deleted)"
            )
        if self.final.exists() and not overwrite and not _is_empty_folder(self.final):
            raise RunFolderError(
                f"run folder {self.final} already exists; pass --overwrite to replace it "
                "(it is replaced only when the new run completes), or choose another name/output"
            )
        return StartMode.FRESH

    def prepare(self, mode: StartMode) -> RunPaths:
        """Create the partial folder for ``mode`` (one process does this); returns its paths."""
        if mode is StartMode.FRESH and self.partial.exists():
            shutil.rmtree(self.partial)
        elif mode is StartMode.FROM_COMPLETE:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            shutil.copytree(self.final, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.paths

    def publish(self) -> Path:
        """Move the complete partial folder to ``final`` (replacing the previous run) and return it.

        The previous run is first renamed aside, then the new one renamed into place, then the
        old one deleted: at every instant one complete run exists on disk.
        """
        replaced = None
        if self.final.exists():
            replaced = self.final.parent / f".{self.final.name}.replaced-{os.getpid()}-{time.time_ns()}"
            os.replace(self.final, replaced)
        os.replace(self.partial, self.final)
        _fsync_dir(self.final.parent)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        return self.final

    def discard_unless_resumable(self) -> None:
        """After a failed run: delete the partial folder unless it holds a checkpoint to resume."""
        if self.partial.exists() and not _has_checkpoint(self.partial):
            shutil.rmtree(self.partial, ignore_errors=True)

    def lock(self) -> "RunLock":
        return RunLock(self.lock_file, self.final)


class RunLock:
    """An exclusive ``flock`` on the run's lock file, held while the run trains."""

    def __init__(self, path: Path, run: Path) -> None:
        self.path = path
        self.run = run
        self._handle: IO[str] | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunFolderError(f"run folder {self.run} is being trained by another process (lock {self.path})") from None
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            # The file stays: unlinking it could let two later processes lock two different inodes.
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _has_checkpoint(root: Path) -> bool:
    checkpoints = RunPaths(root).checkpoints
    return (checkpoints / CHECKPOINT_NAME).exists() or (checkpoints / PREVIOUS_CHECKPOINT_NAME).exists()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
