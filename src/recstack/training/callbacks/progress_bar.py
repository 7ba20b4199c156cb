"""A tqdm bar per epoch with its total, rate and ETA, the running loss and samples/s."""

from __future__ import annotations

from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.callbacks.metric_keys import is_metric
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["ProgressBar"]


class ProgressBar(TrainerCallback):
    """One bar per epoch, in batches; the postfix shows the loss and samples/s of the latest log
    window, and each finished epoch is summarised under its bar (epochs counted from 1, the best
    one marked).

    The total is ``state.epoch_length``: ``len()`` of the epoch's batches, the last epoch's
    count, or the batch stream's estimate from its row count (Parquet metadata, or the rows the
    preprocessor's fitting pass read from a CSV); with a total the bar shows the ETA.

    The Trainer installs one when ``config.progress`` is true. tqdm hides the bar by itself
    when stderr is not a terminal (CI logs, redirected output).

    Args:
        enabled: False hides the bar everywhere.
        file: where the bar is drawn (default: stderr).
    """

    def __init__(self, *, enabled: bool = True, file: Any = None) -> None:
        self.enabled = enabled
        self.file = file
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
            file=self.file,
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
                f"{key} {value:.4f}"
                for key, value in logs.items()
                if key not in ("epoch", "step") and is_metric(key)  # no eval_count & co.
            )
            best = " (best)" if state.best_epoch == int(logs["epoch"]) and state.best_epoch is not None else ""
            self._bar.write(f"epoch {int(logs['epoch']) + 1}: {summary}{best}", file=self.file)

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
