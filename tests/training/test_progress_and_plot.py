"""What a user sees while and after training: the bar's total/rate/ETA, the epoch summaries
(counted from 1, bookkeeping left out), the learning-curve panels and the best epoch on them."""

from __future__ import annotations

import io
import operator
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.evaluation.ranking_metrics import ranking_report
from recstack.schema import Schema
from recstack.tasks import BinaryClassificationTask
from recstack.training import MetricHistory, ProgressBar, Trainer, TrainerConfig
from recstack.training.callbacks.metric_keys import is_metric

from .toy import LogisticRegression, epoch_batches, planted_data

TASK = BinaryClassificationTask()
CONFIG = TrainerConfig(epochs=2, lr=0.05, log_every_steps=2, progress=False, device="cpu")


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal, so tqdm draws into it."""

    def isatty(self) -> bool:
        return True


def final_frames(text: str) -> dict[str, str]:
    """The last drawn state of each epoch's bar: {"epoch 1/2": "... 8/8 [00:00<00:00, ...]"}."""
    frames: dict[str, str] = {}
    for frame in re.split(r"[\r\n]", text):
        match = re.match(r"\s*(epoch \d+/\d+):", frame)
        if match:
            frames[match.group(1)] = frame
    return frames


def report_evaluator(data):
    """The evaluator train.py uses: auc/logloss/accuracy plus count and positive_rate."""

    def evaluate(model):
        return ranking_report(data.label.numpy(), torch.sigmoid(model(data)).numpy())

    return evaluate


def unsized(train_batches):
    """The same batches behind a generator: no len(), as a streamed source."""
    return lambda epoch: (batch for batch in train_batches(epoch))


def test_bar_of_a_sized_epoch_shows_total_rate_and_eta():
    terminal = Terminal()
    Trainer(CONFIG, callbacks=[ProgressBar(file=terminal)]).fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
    frames = final_frames(terminal.getvalue())
    assert set(frames) == {"epoch 1/2", "epoch 2/2"}
    for frame in frames.values():
        assert "8/8 [" in frame and "<00:00" in frame and "batch/s" in frame  # total, ETA, rate


def test_bar_of_an_unsized_stream_takes_its_total_from_the_first_epoch():
    terminal = Terminal()
    batches = unsized(epoch_batches(planted_data()))
    Trainer(CONFIG, callbacks=[ProgressBar(file=terminal)]).fit(LogisticRegression(), TASK, batches)
    frames = final_frames(terminal.getvalue())
    assert not re.search(r"\d/\d+ \[", frames["epoch 1/2"])  # nothing tells the first epoch's length
    assert "8batch [" in frames["epoch 1/2"]  # ... so it counts batches and shows the rate
    assert "8/8 [" in frames["epoch 2/2"]  # the first epoch counted it


class HintedStream(IterableDataset):
    """An IterableDataset without len() that estimates its length, as BatchStream does."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __length_hint__(self) -> int:
        return len(self.batches)


def test_a_dataloader_over_an_iterable_dataset_trains_and_its_bar_has_the_estimated_total():
    # DataLoader has __len__, which raises TypeError for an IterableDataset without len():
    # the trainer used to call it and crash (train runs with loader.num_workers > 0 did).
    data = planted_data()
    terminal = Terminal()
    loaders = lambda epoch: DataLoader(HintedStream(epoch_batches(data)(epoch)), batch_size=None)  # noqa: E731
    state = Trainer(CONFIG, callbacks=[ProgressBar(file=terminal)]).fit(LogisticRegression(), TASK, loaders)
    assert state.global_step == 16
    assert "8/8 [" in final_frames(terminal.getvalue())["epoch 1/2"]


class ReadsX(torch.nn.Module):
    """logits = w·x + b over the one numeric feature the Parquet test file has."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, batch):
        return self.linear(batch.dense["x"].reshape(-1, 1)).squeeze(-1)  # (B,)


def parquet_stream(tmp_path, *, drop_last: bool = False) -> BatchStream:
    ids = np.arange(1000)
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"item": ids % 7, "x": (ids % 5).astype(float), "label": ids % 2}), path, row_group_size=300)
    schema = Schema.from_dict({"label": "label", "features": [{"name": "item", "kind": "categorical"}, {"name": "x", "kind": "numeric"}]})
    source = DataSource(paths=(str(path),))
    config = LoaderConfig(batch_size=64, shuffle_buffer=256, drop_last=drop_last, cache=False)
    return BatchStream(source=source, preprocessor=Preprocessor(schema).fit(source), config=config)


def test_parquet_stream_bar_has_its_total_from_the_metadata_in_the_first_epoch(tmp_path):
    stream = parquet_stream(tmp_path)
    assert stream.source.num_rows() == 1000
    terminal = Terminal()

    def train_batches(epoch):
        stream.set_epoch(epoch)
        return stream

    Trainer(CONFIG, callbacks=[ProgressBar(file=terminal)]).fit(ReadsX(), TASK, train_batches)
    frames = final_frames(terminal.getvalue())
    assert "16/16 [" in frames["epoch 1/2"] and "16/16 [" in frames["epoch 2/2"]  # ceil(1000 / 64)


def test_batch_stream_length_hint_matches_the_batches_it_gives(tmp_path):
    for drop_last in (False, True):
        stream = parquet_stream(tmp_path, drop_last=drop_last)
        assert operator.length_hint(stream) == len(list(stream)) == (15 if drop_last else 16)


def test_csv_source_has_no_row_count_from_metadata(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("label,x\n1,0.5\n0,0.25\n")
    assert DataSource(paths=(str(path),)).num_rows() is None


def test_epoch_summaries_count_from_one_mark_the_best_and_leave_out_bookkeeping():
    data = planted_data()
    terminal = Terminal()
    config = TrainerConfig(epochs=3, lr=0.05, log_every_steps=2, progress=False, device="cpu")
    state = Trainer(config, callbacks=[ProgressBar(file=terminal)]).fit(
        LogisticRegression(), TASK, epoch_batches(data), report_evaluator(data)
    )
    summaries = [line for line in terminal.getvalue().splitlines() if re.match(r"epoch \d+: ", line)]
    assert [line.split(":")[0] for line in summaries] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all("eval_auc" in line and "count" not in line and "positive_rate" not in line for line in summaries)
    assert summaries[state.best_epoch].endswith("(best)")


def test_bookkeeping_keys_are_not_metrics():
    for key in ("eval_count", "count", "users", "positive_rate", "skipped_bad_rows", "eval_rows", "num_queries"):
        assert not is_metric(key), key
    for key in ("eval_auc", "gauc", "logloss", "accuracy", "recall@10", "ndcg@50", "hitrate@10", "mrr"):
        assert is_metric(key), key


def test_learning_curve_has_one_panel_per_metric_and_marks_the_best_epoch():
    data = planted_data()
    history = MetricHistory()
    config = TrainerConfig(epochs=4, lr=0.05, log_every_steps=2, progress=False, device="cpu")
    state = Trainer(config, callbacks=[history]).fit(LogisticRegression(), TASK, epoch_batches(data), report_evaluator(data))

    figure = history.figure()
    panels = [ax for ax in figure.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in panels]
    assert titles == ["training loss", "validation AUC", "validation log loss", "validation accuracy"]
    drawn = {line.get_label() for ax in panels for line in ax.get_lines()}
    assert not any("count" in label or "positive_rate" in label for label in drawn)
    best = state.best_epoch + 1  # the trainer's 0-based best epoch, shown 1-based
    for ax, key in zip(panels, ["train_loss", "eval_auc", "eval_logloss", "eval_accuracy"]):
        curve, marker = ax.get_lines()
        assert list(curve.get_xdata()) == [1, 2, 3, 4]  # epochs counted from 1
        assert list(curve.get_ydata()) == pytest.approx(history.series(key))
        assert set(marker.get_xdata()) == {best} and marker.get_label() == f"best epoch {best}"
    assert figure._suptitle.get_text() == f"best epoch {best} of 4"


def test_learning_curve_best_epoch_survives_a_resume_through_state_dict():
    history = MetricHistory()
    history.epochs = [{"epoch": 0, "step": 8, "train_loss": 0.7, "eval_auc": 0.6}]
    history.best_epoch = 0
    restored = MetricHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.best_epoch == 0
    old_checkpoint = {"epochs": history.epochs}  # written before best_epoch was kept
    restored.load_state_dict(old_checkpoint)
    assert restored.best_epoch is None and restored.figure().axes[0].get_title() == "training loss"


def test_plot_writes_the_figure_as_png(tmp_path):
    history = MetricHistory()
    history.epochs = [{"epoch": e, "step": 8 * (e + 1), "train_loss": 0.7 - 0.1 * e, "eval_auc": 0.6 + 0.05 * e, "eval_count": 10_000} for e in range(3)]
    history.best_epoch = 2
    path = history.plot(tmp_path / "plots" / "learning_curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_metrics_get_a_panel_each_in_cut_off_order_and_users_none():
    history = MetricHistory()
    history.epochs = [
        {"epoch": e, "step": 8, "train_loss": 0.5, "eval_recall@100": 0.5, "eval_recall@50": 0.4, "eval_ndcg@10": 0.2, "eval_mrr": 0.1, "eval_users": 943}
        for e in range(2)
    ]
    titles = [ax.get_title() for ax in history.figure().axes if ax.get_visible()]
    assert titles == ["training loss", "validation MRR", "validation NDCG@10", "validation recall@50", "validation recall@100"]
