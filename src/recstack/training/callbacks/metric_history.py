"""Per-epoch train loss and validation metrics, and a learning-curve plot of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recstack.training.callbacks.base import TrainerCallback
from recstack.training.state import TrainerControl, TrainerState

__all__ = ["MetricHistory"]


class MetricHistory(TrainerCallback):
    """Keeps the epoch logs: ``{"epoch", "step", "train_loss", "eval_<metric>"...}`` per epoch.

    Example:
        >>> history = MetricHistory()
        >>> trainer = Trainer(config, callbacks=[history])  # doctest: +SKIP
        >>> trainer.fit(model, task, train_batches, evaluate)  # doctest: +SKIP
        >>> history.plot("runs/deepfm/learning_curve.png")  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_log(self, state: TrainerState, control: TrainerControl, logs: dict[str, float]) -> None:
        if "train_loss" in logs:
            self.epochs.append(dict(logs))

    def series(self, key: str) -> list[float]:
        """The values of ``key`` ("train_loss", "eval_auc" ...) in epoch order."""
        return [record[key] for record in self.epochs if key in record]

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: train loss per epoch on the left, validation metrics on the right."""
        # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        epochs = [int(record["epoch"]) + 1 for record in self.epochs]
        metric_keys = sorted(
            {key for record in self.epochs for key in record if key.startswith("eval_")}
        )

        figure = Figure(figsize=(10, 4), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axes, metric_axes = figure.subplots(1, 2)
        loss_axes.plot(epochs, self.series("train_loss"), marker="o")
        loss_axes.set(title="training loss", xlabel="epoch", ylabel="mean batch loss")
        for key in metric_keys:
            points = [(int(r["epoch"]) + 1, r[key]) for r in self.epochs if key in r]
            metric_axes.plot(*zip(*points), marker="o", label=key.removeprefix("eval_"))
        metric_axes.set(title="validation", xlabel="epoch")
        if metric_keys:
            metric_axes.legend()
        figure.savefig(path, dpi=100)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(record) for record in self.epochs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = [dict(record) for record in state["epochs"]]
