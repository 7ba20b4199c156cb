"""Checkpoints: plain tensors (weights_only), atomic, and a resume equal to an uninterrupted run."""

import pytest
import torch

from recstack.tasks import BinaryClassificationTask
from recstack.training import CheckpointCallback, Trainer, TrainerCallback, TrainerConfig

from .toy import (
    DropoutMLP,
    SparseItemModel,
    auc_evaluator,
    epoch_batches,
    global_rng_batches,
    lazy_noisy_batches,
    planted_data,
    same_weights,
    scripted_evaluator,
)

TASK = BinaryClassificationTask(pos_weight=1.2)
# 512 rows / 64 = 8 steps per epoch; checkpoints at steps 4, 8 (epoch end), 12, 16, 20 ...
CONFIG = TrainerConfig(
    epochs=3,
    lr=0.01,
    optimizer="adamw",
    weight_decay=0.01,
    scheduler="linear_warmup",
    warmup_steps=5,
    grad_clip_norm=1.0,
    checkpoint_every_steps=4,
    log_every_steps=3,
    progress=False,
    device="cpu",
    seed=7,
)


class Interrupted(Exception):
    pass


class CrashAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, control):
        if state.global_step == self.step:
            raise Interrupted


def epoch_records(state):
    return [log for log in state.log_history if "train_loss" in log]


BATCHES = {
    "epoch-seeded": epoch_batches,  # shuffled by a generator seeded with the epoch
    "global-rng": global_rng_batches,  # shuffled by the global RNG, like DataLoader(shuffle=True)
    "lazy": lazy_noisy_batches,  # a generator drawing from the global RNG batch by batch
}


@pytest.mark.parametrize("batches", list(BATCHES))
@pytest.mark.parametrize("crash_step", [14, 16, 17])  # mid-epoch, at a checkpoint, after epoch end
def test_resume_reaches_exactly_the_weights_of_an_uninterrupted_run(tmp_path, batches, crash_step):
    data = planted_data()
    train_batches, evaluate = BATCHES[batches](data), auc_evaluator(data, TASK)

    torch.manual_seed(1)
    reference = DropoutMLP()
    expected = Trainer(CONFIG, checkpoint_dir=tmp_path / "a").fit(
        reference, TASK, train_batches, evaluate
    )

    torch.manual_seed(1)
    with pytest.raises(Interrupted):
        Trainer(CONFIG, callbacks=[CrashAt(crash_step)], checkpoint_dir=tmp_path / "b").fit(
            DropoutMLP(), TASK, train_batches, evaluate
        )
    resumed_model = DropoutMLP()  # other initial weights: everything must come from last.pt
    resumed = Trainer(CONFIG, checkpoint_dir=tmp_path / "b").fit(
        resumed_model, TASK, train_batches, evaluate, resume=True
    )

    assert same_weights(resumed_model.state_dict(), reference.state_dict())
    assert (resumed.global_step, resumed.samples_seen, resumed.epoch) == (24, 3 * 512, 3)
    assert epoch_records(resumed) == epoch_records(expected)  # same train loss and AUC per epoch
    assert resumed.best_epoch == expected.best_epoch


def test_resume_after_a_crash_in_evaluate_replays_the_end_of_the_epoch(tmp_path):
    # step 16 is both a step checkpoint and epoch 1's last batch: the crash comes before the
    # epoch-end checkpoint, so the resume skips all 8 batches of epoch 1 and evaluates again
    data = planted_data()
    train_batches, evaluate = global_rng_batches(data), auc_evaluator(data, TASK)
    calls = []

    def crashing_evaluate(model):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return evaluate(model)

    torch.manual_seed(1)
    reference = DropoutMLP()
    expected = Trainer(CONFIG).fit(reference, TASK, train_batches, evaluate)
    torch.manual_seed(1)
    with pytest.raises(Interrupted):
        Trainer(CONFIG, checkpoint_dir=tmp_path).fit(
            DropoutMLP(), TASK, train_batches, crashing_evaluate
        )
    model = DropoutMLP()
    resumed = Trainer(CONFIG, checkpoint_dir=tmp_path).fit(
        model, TASK, train_batches, evaluate, resume=True
    )
    assert same_weights(model.state_dict(), reference.state_dict())
    assert epoch_records(resumed) == epoch_records(expected)


def test_checkpoint_loads_with_weights_only_and_is_written_atomically(tmp_path):
    data = planted_data()
    model = SparseItemModel()
    cfg = TrainerConfig(
        epochs=2, sparse_embeddings=True, scheduler="cosine", progress=False, device="cpu"
    )
    trainer = Trainer(cfg, checkpoint_dir=tmp_path)
    trainer.fit(model, TASK, epoch_batches(data), auc_evaluator(data, TASK))

    # the two latest checkpoints, no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(payload) == {
        "version", "model", "best_weights", "optimizers", "schedulers", "scaler", "state",
        "callbacks", "rng",
    }  # fmt: skip
    assert len(payload["optimizers"]) == 2  # Adam and SparseAdam
    assert payload["state"]["epoch"] == 2 and payload["state"]["epoch_step"] == 0
    assert isinstance(payload["state"]["log_history"], list)
    assert same_weights(payload["best_weights"], model.state_dict())  # fit restored the best


def test_an_early_stopped_run_resumes_as_stopped(tmp_path):
    evaluate, seen = scripted_evaluator([0.7, 0.6, 0.6, 0.9, 0.9])
    cfg = TrainerConfig(epochs=5, patience=2, progress=False, device="cpu")
    data = planted_data()
    Trainer(cfg, checkpoint_dir=tmp_path).fit(DropoutMLP(), TASK, epoch_batches(data), evaluate)
    assert len(seen) == 3

    model = DropoutMLP()
    state = Trainer(cfg, checkpoint_dir=tmp_path).fit(
        model, TASK, epoch_batches(data), evaluate, resume=True
    )
    assert len(seen) == 3 and state.stopped_early and state.epoch == 3
    assert same_weights(model.state_dict(), seen[0])  # best weights come back from last.pt


def test_step_checkpoints_follow_the_callback(tmp_path):
    saves = []

    class RecordSaves(TrainerCallback):
        def on_save(self, state, control, path):
            saves.append((state.global_step, path.name))

    cfg = TrainerConfig(epochs=1, progress=False, device="cpu", checkpoint_every_steps=100)
    Trainer(
        cfg, callbacks=[CheckpointCallback(every_steps=3), RecordSaves()], checkpoint_dir=tmp_path
    ).fit(DropoutMLP(), TASK, epoch_batches(planted_data()))
    assert saves == [(3, "last.pt"), (6, "last.pt"), (8, "last.pt")]


def test_resume_without_a_checkpoint_fails_clearly(tmp_path):
    cfg = TrainerConfig(epochs=1, progress=False, device="cpu")
    from recstack.training.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="last.pt.*missing.*previous.pt.*missing"):
        Trainer(cfg, checkpoint_dir=tmp_path).fit(
            DropoutMLP(), TASK, epoch_batches(planted_data()), resume=True
        )


def _payload(extra=None):
    return {"model": {"w": torch.randn(3)}, "state": {"epoch": 1}, **({} if extra is None else extra)}


def test_a_payload_resume_could_not_read_fails_at_save_and_leaves_the_last_checkpoint(tmp_path):
    import numpy as np

    from recstack.training.checkpoint import CheckpointError, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="damaged checkpoint"):  # a NumPy array: not weights_only
        save_checkpoint(path, _payload({"callbacks": {"Mine": [np.arange(3)]}}))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_the_weights_only_check_runs_once_per_payload_structure_and_bytes_are_always_compared(tmp_path, monkeypatch):
    from recstack.training import checkpoint

    loads = []
    real_read = checkpoint._read
    monkeypatch.setattr(checkpoint, "_read", lambda p: loads.append(p) or real_read(p))
    monkeypatch.setattr(checkpoint, "_LOADABLE_STRUCTURES", set())
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, _payload())
    checkpoint.save_checkpoint(path, _payload({"log": [{"loss": 0.5}, {"loss": 0.4}]}))  # a new structure
    checkpoint.save_checkpoint(path, _payload({"log": [{"loss": 0.5}, {"loss": 0.4}, {"loss": 0.3}]}))  # longer log: same
    checkpoint.save_checkpoint(path, _payload())  # new numbers, same structure: not loaded again
    assert len(loads) == 2
    checkpoint.save_checkpoint(path, _payload({"best_weights": {"w": torch.randn(3, dtype=torch.float64)}}))  # a new dtype
    assert len(loads) == 3
    assert torch.load(path, weights_only=True)["state"] == {"epoch": 1}

    # a disk that gives back other bytes than were written (here: loses all but 10 at fsync):
    # refused, the last checkpoint kept
    before = path.read_bytes()
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (checkpoint.os.ftruncate(fd, 10), real_fsync(fd)))
    with pytest.raises(checkpoint.CheckpointError, match="differs from what was written"):
        checkpoint.save_checkpoint(path, _payload())
    monkeypatch.undo()
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_write_that_fails_leaves_no_temporary_file_and_the_last_checkpoint(tmp_path):
    import pickle

    from recstack.training.checkpoint import save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError), match="pickle"):  # a value torch.save cannot pickle
        save_checkpoint(path, _payload({"callbacks": {"Mine": [lambda: None]}}))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
