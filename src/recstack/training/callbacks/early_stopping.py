"""Stop when a validation metric has not improved for ``patience`` evaluations."""

from __future__ import annotations

from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.config import MonitorMode
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["EarlyStopping"]


class EarlyStopping(TrainerCallback):
    """Request a stop after ``patience`` evaluations in a row without improvement.

    It only requests: the loop stops, and the loop (not this callback) restores the weights of
    the best epoch on ``config.monitor`` at the end of training.

    Args:
        patience: evaluations without improvement to tolerate.
        monitor: metric name returned by ``evaluate``.
        mode: ``"max"`` (AUC, recall) or ``"min"`` (log loss).
        min_delta: smallest change that counts as an improvement.

    Example:
        >>> from recstack.training.state import TrainerControl, TrainerState
        >>> stopper, control = EarlyStopping(patience=2, monitor="auc"), TrainerControl()
        >>> for auc in (0.70, 0.72, 0.71, 0.71):
        ...     stopper.on_evaluate(TrainerState(), control, {"auc": auc})
        >>> control.should_stop
        True
    """

    def __init__(
        self,
        *,
        patience: int,
        monitor: str = "auc",
        mode: MonitorMode | str = MonitorMode.MAX,
        min_delta: float = 0.0,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.monitor = monitor
        self.mode = MonitorMode(mode)
        self.min_delta = min_delta
        self.best: float | None = None
        self.evaluations_without_improvement = 0

    def on_evaluate(
        self, state: TrainerState, control: TrainerControl, metrics: dict[str, float]
    ) -> None:
        if self.monitor not in metrics:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, evaluate() returned {sorted(metrics)}"
            )
        value = metrics[self.monitor]
        if self.mode.improved(value, self.best, self.min_delta):
            self.best = value
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1
        if self.evaluations_without_improvement >= self.patience:
            control.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.evaluations_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.evaluations_without_improvement = state["wait"]
