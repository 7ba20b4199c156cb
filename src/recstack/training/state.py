"""What the loop knows (TrainerState) and what callbacks may ask of it (TrainerControl).

As in Hugging Face's ``trainer_callback.py``: callbacks read the state and set control flags;
only the loop changes the state, trains, evaluates, saves and stops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainerControl", "TrainerState"]


@dataclass
class TrainerState:
    """Progress of one ``Trainer.fit``; saved in every checkpoint as a plain dict.

    Epochs are counted from 0 here: ``epoch`` is the index passed to ``train_batches(epoch)`` for
    the epoch being trained, which is also the number of epochs completed, and ``best_epoch`` is
    such an index. What a user reads counts from 1 (``metrics.json``'s ``best_epoch``, the
    progress bar, the epoch summaries, the learning-curve plot): those add 1 at the edge.
    """

    epoch: int = 0
    num_epochs: int = 0
    epoch_step: int = 0  # batches consumed in this epoch: where a resume continues
    # Batches in this epoch, for display: len() of the epoch's batches, else the count of the
    # last complete epoch, else the iterable's __length_hint__ (an estimate); None if unknown.
    epoch_length: int | None = None
    global_step: int = 0  # optimizer steps since the start of training
    samples_seen: int = 0
    # Sum of batch losses this epoch. The loop accumulates on the device (no sync per step)
    # and copies the sum here when it logs or saves, so a resumed epoch reports the same mean.
    epoch_loss_sum: float = 0.0
    best_metric: float | None = None  # best value of config.monitor so far
    best_epoch: int | None = None  # 0-based index of the epoch whose weights gave best_metric
    stopped_early: bool = False  # a callback requested a stop and the loop honoured it
    train_seconds: float = 0.0  # time in the loop, summed over resumed runs
    evaluation_seconds: float = 0.0  # the part of train_seconds spent in evaluate() at epoch ends
    # One dict per log event: step logs {epoch, step, loss, lr, samples_per_second} and epoch
    # logs {epoch, step, train_loss, eval_<metric>...}.
    log_history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy in plain Python values, which ``torch.load(weights_only=True)`` reads."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainerState":
        return cls(**values)


@dataclass
class TrainerControl:
    """Requests from callbacks; the loop acts on them and resets all but ``should_stop``."""

    should_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False
