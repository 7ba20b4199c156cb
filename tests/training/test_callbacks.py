"""Callbacks: TensorBoard scalars, the learning-curve PNG, the progress bar, early stopping."""

import pytest

from recstack.tasks import BinaryClassificationTask
from recstack.training import (
    EarlyStopping,
    MetricHistory,
    ProgressBar,
    TensorBoardLogger,
    Trainer,
    TrainerConfig,
    TrainerControl,
    TrainerState,
)

from .toy import LogisticRegression, auc_evaluator, epoch_batches, planted_data

TASK = BinaryClassificationTask()
CONFIG = TrainerConfig(epochs=3, lr=0.05, log_every_steps=2, progress=False, device="cpu")


def test_tensorboard_logger_writes_loss_lr_and_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = planted_data()
    trainer = Trainer(CONFIG, callbacks=[TensorBoardLogger(tmp_path / "tb")])
    trainer.fit(LogisticRegression(), TASK, epoch_batches(data), auc_evaluator(data, TASK))

    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_second"} <= tags
    assert {"epoch/train_loss", "eval/auc"} <= tags
    assert [event.step for event in events.Scalars("eval/auc")] == [8, 16, 24]
    assert len(events.Scalars("train/loss")) == 12


def test_metric_history_records_epochs_and_plots_a_png(tmp_path):
    data = planted_data()
    history = MetricHistory()
    Trainer(CONFIG, callbacks=[history]).fit(
        LogisticRegression(), TASK, epoch_batches(data), auc_evaluator(data, TASK)
    )
    assert len(history.series("train_loss")) == 3 and len(history.series("eval_auc")) == 3

    path = history.plot(tmp_path / "plots" / "learning_curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_progress_bar_stays_silent_when_stderr_is_not_a_terminal(capsys):
    config = TrainerConfig(epochs=1, progress=True, log_every_steps=1, device="cpu")
    state = Trainer(config).fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
    assert state.global_step == 8
    assert capsys.readouterr().err == ""


def test_progress_bar_shows_loss_and_samples_per_second(capsys, monkeypatch):
    bar = ProgressBar()
    state, control = TrainerState(num_epochs=2, epoch_length=4), TrainerControl()
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    bar.on_epoch_begin(state, control)
    bar.on_step_end(state, control)
    logs = {"epoch": 0, "step": 1, "loss": 0.6931, "lr": 1e-3, "samples_per_second": 2048.0}
    bar.on_log(state, control, logs)
    postfix = bar._bar.postfix
    bar.on_train_end(state, control)
    assert "loss=0.6931" in postfix and "samples_s=2,048" in postfix


def test_early_stopping_counts_evaluations_without_improvement():
    stopper = EarlyStopping(patience=2, monitor="logloss", mode="min")
    control, state = TrainerControl(), TrainerState()
    for logloss in (0.50, 0.45, 0.46, 0.44, 0.47):
        stopper.on_evaluate(state, control, {"logloss": logloss})
        assert not control.should_stop
    stopper.on_evaluate(state, control, {"logloss": 0.45})
    assert control.should_stop
    assert stopper.state_dict() == {"best": 0.44, "wait": 2}
    with pytest.raises(KeyError, match="auc"):
        EarlyStopping(patience=1).on_evaluate(state, control, {"logloss": 0.5})
