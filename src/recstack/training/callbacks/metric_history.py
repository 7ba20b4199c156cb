"""Per-epoch train loss and validation metrics, and a learning-curve plot of them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.callbacks.metric_keys import display_name, is_metric
from recstack.training.state import TrainerControl, TrainerState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MetricHistory"]

_PANELS_PER_ROW = 3
_FIRST = ("auc", "gauc", "logloss", "accuracy", "mrr")  # the headline metrics lead, in this order


class MetricHistory(TrainerCallback):
    """Keeps the epoch logs: ``{"epoch", "step", "train_loss", "eval_<metric>"...}`` per epoch,
    and the best epoch the Trainer chose (``state.best_epoch``, on ``config.monitor``).

    Epochs are stored 0-based as the Trainer logs them; :meth:`figure` shows them 1-based, as
    ``metrics.json`` and the progress bar do.

    Example:
        >>> history = MetricHistory()
        >>> trainer = Trainer(config, callbacks=[history])  # doctest: +SKIP
        >>> trainer.fit(model, task, train_batches, evaluate)  # doctest: +SKIP
        >>> history.plot("runs/deepfm/learning_curve.png")  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.best_epoch: int | None = None  # 0-based, as TrainerState.best_epoch

    def on_log(self, state: TrainerState, control: TrainerControl, logs: dict[str, float]) -> None:
        if "train_loss" in logs:
            self.epochs.append(dict(logs))
            self.best_epoch = state.best_epoch

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        self.best_epoch = state.best_epoch

    def series(self, key: str) -> list[float]:
        """The values of ``key`` ("train_loss", "eval_auc" ...) in epoch order."""
        return [record[key] for record in self.epochs if key in record]

    def metric_keys(self) -> list[str]:
        """The ``eval_*`` keys that are metrics (bookkeeping such as ``eval_count`` is not)."""
        keys = {key for record in self.epochs for key in record if key.startswith("eval_")}
        return sorted((key for key in keys if is_metric(key)), key=_panel_order)

    def figure(self) -> "Figure":
        """The learning curves as a matplotlib Figure, nothing written: one panel for the
        training loss and one per validation metric (each on its own scale), every panel with
        the best epoch marked by a dashed vertical line."""
        # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        panels = ["train_loss"] + self.metric_keys()
        columns = min(len(panels), _PANELS_PER_ROW)
        rows = math.ceil(len(panels) / columns)
        figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        best = None if self.best_epoch is None else self.best_epoch + 1
        for key, ax in zip(panels, axes):
            points = [(int(record["epoch"]) + 1, record[key]) for record in self.epochs if key in record]
            if points:
                ax.plot(*zip(*points), marker="o", label=key.removeprefix("eval_"))
            if key == "train_loss":
                ax.set(title="training loss", ylabel="mean batch loss")
            else:
                ax.set(title=f"validation {display_name(key)}", ylabel=display_name(key))
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if best is not None:
                ax.axvline(best, color="tab:gray", linestyle="--", linewidth=1, label=f"best epoch {best}")
                ax.legend(loc="best", fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if best is not None:
            figure.suptitle(f"best epoch {best} of {len(self.epochs)}")
        return figure

    def plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG at ``path`` (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure().savefig(path, dpi=100)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(record) for record in self.epochs], "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = [dict(record) for record in state["epochs"]]
        self.best_epoch = state.get("best_epoch")  # absent in checkpoints written before it was kept


def _panel_order(key: str) -> tuple[int, str, int]:
    """auc, gauc, logloss, accuracy, mrr; then the rest by name and cut-off (recall@10 before
    recall@50 before recall@100)."""
    name = key.removeprefix("eval_")
    base, _, k = name.partition("@")
    rank = _FIRST.index(name) if name in _FIRST else len(_FIRST)
    return rank, base, int(k) if k.isdigit() else 0
