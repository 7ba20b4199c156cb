"""The trainer callback that reports each epoch's validation metric to an Optuna trial.

It observes and requests, like every callback: when the trial's pruner says the trial is worse
than its peers it sets ``control.should_stop``; the tune loop (not the trainer) then raises
``optuna.TrialPruned``.
"""

from __future__ import annotations

import math
from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["PruningReporter"]


class PruningReporter(TrainerCallback):
    """Report ``metrics[metric]`` after every evaluation; request a stop when the trial should be pruned.

    Args:
        trial: an ``optuna.Trial`` (``report`` and ``should_prune`` are called).
        metric: the validation metric the study optimises.

    After ``fit``: ``pruned_at`` is the (1-based) epoch at which a stop was requested, ``missing``
    lists the metrics ``evaluate`` returned when ``metric`` was not among them.
    """

    def __init__(self, *, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned_at: int | None = None
        self.missing: list[str] | None = None

    def on_evaluate(self, state: TrainerState, control: TrainerControl, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            self.missing = sorted(metrics)
            control.should_stop = True
            return
        value = float(metrics[self.metric])
        epoch = state.epoch + 1  # epochs a user reads count from 1
        if not math.isfinite(value):  # a diverged trial: nothing to compare, no point continuing
            self.pruned_at = epoch
            control.should_stop = True
            return
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            control.should_stop = True
