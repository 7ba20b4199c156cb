"""Request a checkpoint every N optimizer steps and at each epoch end."""

from __future__ import annotations

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["CheckpointCallback"]


class CheckpointCallback(TrainerCallback):
    """Sets ``control.should_save``; the Trainer writes ``checkpoint_dir/last.pt``.

    Installed by the Trainer when it has a ``checkpoint_dir``, with
    ``every_steps=config.checkpoint_every_steps``; pass your own to override.

    Args:
        every_steps: also save every this many optimizer steps (None: epoch ends only).
        at_epoch_end: save when an epoch ends (resume then starts the next epoch).
    """

    def __init__(self, *, every_steps: int | None = None, at_epoch_end: bool = True) -> None:
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or None, got {every_steps}")
        self.every_steps = every_steps
        self.at_epoch_end = at_epoch_end

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        if self.every_steps is not None and state.global_step % self.every_steps == 0:
            control.should_save = True

    def on_epoch_end(self, state: TrainerState, control: TrainerControl) -> None:
        if self.at_epoch_end:
            control.should_save = True
