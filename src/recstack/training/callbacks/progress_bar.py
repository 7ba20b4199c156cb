"""A tqdm bar per epoch with the running loss and samples/s."""

from __future__ import annotations

from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["ProgressBar"]


class ProgressBar(TrainerCallback):
    """One bar per epoch; the postfix shows the loss and samples/s of the latest log window.

    The Trainer installs one when ``config.progress`` is true. tqdm hides the bar by itself
    when stderr is not a terminal (CI logs, redirected output).

    Args:
        enabled: False hides the bar everywhere.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        from tqdm.auto import tqdm

        self._close()
        self._bar = tqdm(
            total=state.epoch_length,
            initial=state.epoch_step,  # a resumed epoch starts part-way
            desc=f"epoch {state.epoch + 1}/{state.num_epochs}",
            unit="batch",
            dynamic_ncols=True,
            disable=None if self.enabled else True,  # None: off when not a TTY
        )

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_log(self, state: TrainerState, control: TrainerControl, logs: dict[str, float]) -> None:
        if self._bar is None or self._bar.disable:
            return
        if "loss" in logs:
            self._bar.set_postfix(
                loss=f"{logs['loss']:.4f}",
                samples_s=f"{logs['samples_per_second']:,.0f}",
                refresh=False,
            )
        elif "train_loss" in logs:  # the epoch summary, under the finished bar
            summary = "  ".join(
                f"{key} {value:.4f}" for key, value in logs.items() if key not in ("epoch", "step")
            )
            self._bar.write(f"epoch {int(logs['epoch']) + 1}: {summary}")

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
