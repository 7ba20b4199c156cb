"""Write every log event (loss, lr, samples/s, epoch metrics) to TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(TrainerCallback):
    """Scalars at ``global_step``: ``train/loss``, ``train/lr``, ``train/samples_per_second``,
    ``epoch/train_loss`` and ``eval/<metric>``.

    TensorBoard is imported when training begins, so it is only needed if this callback is used
    (``pip install 'recstack[train]'``).

    Args:
        log_dir: folder for the event files (created if missing).
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs tensorboard: pip install 'recstack[train]'"
            ) from error
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_log(self, state: TrainerState, control: TrainerControl, logs: dict[str, float]) -> None:
        if self._writer is None:
            return
        step = int(logs.get("step", state.global_step))
        for key, value in logs.items():
            if key not in ("epoch", "step"):
                self._writer.add_scalar(_tag(key), value, global_step=step)

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tag(key: str) -> str:
    if key.startswith("eval_"):
        return f"eval/{key.removeprefix('eval_')}"
    if key == "train_loss":
        return "epoch/train_loss"
    return f"train/{key}"
