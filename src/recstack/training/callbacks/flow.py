"""The default requests: log every ``log_every_steps`` steps, evaluate at each epoch end."""

from __future__ import annotations

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["DefaultFlowCallback"]


class DefaultFlowCallback(TrainerCallback):
    """Always installed first by the Trainer; later callbacks may override its requests."""

    def __init__(self, *, log_every_steps: int) -> None:
        self.log_every_steps = log_every_steps

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        if state.global_step % self.log_every_steps == 0:
            control.should_log = True

    def on_epoch_end(self, state: TrainerState, control: TrainerControl) -> None:
        control.should_evaluate = True
