"""Trainer: learns, restores the best weights, stops early, clips, trains sparse tables."""

import pytest
import torch
from torch import nn

from recstack.tasks import BinaryClassificationTask
from recstack.training import (
    EarlyStopping,
    Trainer,
    TrainerCallback,
    TrainerConfig,
)
from recstack.training.optim import build_optimizers

from .toy import (
    LogisticRegression,
    SparseItemModel,
    auc_evaluator,
    epoch_batches,
    planted_data,
    same_weights,
    scripted_evaluator,
)

TASK = BinaryClassificationTask()


def config(**overrides) -> TrainerConfig:
    defaults = {"epochs": 4, "lr": 0.05, "progress": False, "device": "cpu"}
    return TrainerConfig(**{**defaults, **overrides})


def test_loss_decreases_on_a_learnable_problem():
    data = planted_data()
    trainer = Trainer(config(epochs=5, log_every_steps=4))
    state = trainer.fit(LogisticRegression(), TASK, epoch_batches(data), auc_evaluator(data, TASK))

    epoch_losses = [log["train_loss"] for log in state.log_history if "train_loss" in log]
    assert len(epoch_losses) == 5
    assert epoch_losses[-1] < 0.8 * epoch_losses[0]
    assert state.best_metric > 0.8  # AUC on the training data
    assert state.global_step == 5 * 8 and state.samples_seen == 5 * 512
    step_logs = [log for log in state.log_history if "loss" in log]
    assert len(step_logs) == 10 and all(log["samples_per_second"] > 0 for log in step_logs)
    assert trainer.device == torch.device("cpu")


def test_evaluation_time_is_counted_apart_from_the_training_steps():
    data = planted_data()
    with_eval = Trainer(config(epochs=2)).fit(LogisticRegression(), TASK, epoch_batches(data), auc_evaluator(data, TASK))
    assert 0 < with_eval.evaluation_seconds < with_eval.train_seconds
    without = Trainer(config(epochs=2)).fit(LogisticRegression(), TASK, epoch_batches(data))
    assert without.evaluation_seconds == 0 and without.train_seconds > 0


def test_callback_set_up_at_train_begin_is_not_counted_as_training_time():
    """step_samples_per_second's clock starts after on_train_begin (TensorBoard's import and
    writer), as it starts after the model's and optimizer's set-up."""
    import time

    class SlowSetUp(TrainerCallback):
        def on_train_begin(self, state, control):
            time.sleep(0.5)

    state = Trainer(config(epochs=1), callbacks=[SlowSetUp()]).fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
    assert 0 < state.train_seconds < 0.5


class _FreezeProbe(TrainerCallback):
    """Records gc's frozen-object count at each step, and whether garbage made there is collected."""

    def __init__(self):
        self.frozen_counts, self.collected = [], []

    def on_step_end(self, state, control):
        import gc
        import weakref

        self.frozen_counts.append(gc.get_freeze_count())
        cycle = [nn.Linear(2, 2)]
        cycle.append(cycle)  # a reference cycle: only the collector frees it
        alive = weakref.ref(cycle[0])
        del cycle
        gc.collect()
        self.collected.append(alive() is None)


def test_set_up_objects_are_frozen_during_training_only_and_new_garbage_is_still_collected():
    import gc

    assert gc.get_freeze_count() == 0
    probe = _FreezeProbe()
    Trainer(config(epochs=1), callbacks=[probe]).fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
    assert probe.frozen_counts and min(probe.frozen_counts) > 10_000  # torch's own objects, at least
    assert all(probe.collected)
    assert gc.get_freeze_count() == 0  # unfrozen at the end of fit

    off = _FreezeProbe()
    Trainer(config(epochs=1, freeze_set_up_objects=False), callbacks=[off]).fit(
        LogisticRegression(), TASK, epoch_batches(planted_data())
    )
    assert set(off.frozen_counts) == {0} and all(off.collected)


def test_a_callers_own_gc_freeze_is_left_as_it_was():
    import gc

    gc.freeze()
    try:
        before = gc.get_freeze_count()
        probe = _FreezeProbe()
        Trainer(config(epochs=1), callbacks=[probe]).fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
        # not frozen again (that would add the objects made since) nor undone; frozen objects
        # that die leave the count, so it can only fall
        assert all(0 < count <= before for count in probe.frozen_counts)
        assert 0 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    # best at epoch 1, then three evaluations without improvement: stop after epoch 4
    evaluate, seen = scripted_evaluator([0.60, 0.70, 0.65, 0.64, 0.66, 0.99, 0.99])
    model = LogisticRegression()
    trainer = Trainer(config(epochs=7, patience=3))
    state = trainer.fit(model, TASK, epoch_batches(planted_data()), evaluate)

    assert len(seen) == 5 and state.epoch == 5 and state.stopped_early
    assert state.best_epoch == 1 and state.best_metric == pytest.approx(0.70)
    assert same_weights(model.state_dict(), seen[1])
    assert not same_weights(model.state_dict(), seen[4])


def test_best_weights_are_restored_without_early_stopping_too():
    evaluate, seen = scripted_evaluator([0.5, 0.8, 0.6, 0.7])
    model = LogisticRegression()
    state = Trainer(config()).fit(model, TASK, epoch_batches(planted_data()), evaluate)
    assert not state.stopped_early and state.epoch == 4 and state.best_epoch == 1
    assert same_weights(model.state_dict(), seen[1])


def test_min_mode_and_min_delta():
    # 0.395 is not 0.01 better than 0.40: epoch 1 stays the best
    evaluate, seen = scripted_evaluator([0.5, 0.40, 0.395, 0.45], name="logloss")
    model = LogisticRegression()
    cfg = config(monitor="logloss", monitor_mode="min", min_delta=0.01)
    state = Trainer(cfg).fit(model, TASK, epoch_batches(planted_data()), evaluate)
    assert state.best_epoch == 1 and same_weights(model.state_dict(), seen[1])


def test_an_explicit_early_stopping_callback_replaces_the_config_one():
    evaluate, seen = scripted_evaluator([0.6, 0.5, 0.5, 0.5], name="auc")
    trainer = Trainer(config(patience=3), callbacks=[EarlyStopping(patience=1, monitor="auc")])
    state = trainer.fit(LogisticRegression(), TASK, epoch_batches(planted_data()), evaluate)
    assert state.epoch == 2 and state.stopped_early


def test_evaluate_runs_in_eval_mode_without_grad_and_needs_the_monitor():
    def evaluate(model: nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        return {"auc": 0.5}

    trainer = Trainer(config(epochs=1))
    trainer.fit(LogisticRegression(), TASK, epoch_batches(planted_data()), evaluate)
    with pytest.raises(KeyError, match="monitor"):
        Trainer(config(epochs=1, monitor="ndcg")).fit(
            LogisticRegression(), TASK, epoch_batches(planted_data()), evaluate
        )


def test_a_callback_can_request_a_stop_mid_epoch_and_only_the_loop_acts():
    class StopAtStep3(TrainerCallback):
        def on_step_end(self, state, control):
            # the default flow requested a log this step; the loop acted on the previous ones
            assert control.should_log and len(state.log_history) == state.global_step - 1
            if state.global_step == 3:
                control.should_stop = True

    state = Trainer(config(log_every_steps=1), callbacks=[StopAtStep3()]).fit(
        LogisticRegression(), TASK, epoch_batches(planted_data())
    )
    assert state.global_step == 3 and state.stopped_early and state.epoch == 0


def test_grad_clipping_bounds_the_update_norm():
    # SGD with lr=1 moves the weights by exactly the (clipped) gradient
    data = planted_data(64)
    data.dense["x"] = data.dense["x"] * 100.0  # huge gradients

    def update_norm(**overrides) -> float:
        model = LogisticRegression()
        before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
        cfg = config(epochs=1, optimizer="sgd", lr=1.0, **overrides)
        Trainer(cfg).fit(model, TASK, epoch_batches(data, batch_size=64))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float(torch.linalg.vector_norm(after - before))

    assert update_norm() > 10.0
    assert update_norm(grad_clip_norm=0.5) == pytest.approx(0.5, rel=1e-3)


def test_sparse_embeddings_use_sparse_adam_and_train():
    model, data = SparseItemModel(), planted_data()
    optimizers = build_optimizers(model, config(sparse_embeddings=True))
    assert isinstance(optimizers[0], torch.optim.Adam) and type(optimizers[1]) is torch.optim.SparseAdam
    assert optimizers[1].param_groups[0]["params"][0] is model.item_embedding.weight
    adagrad = build_optimizers(model, config(sparse_embeddings=True, optimizer="adagrad"))
    assert [type(o).__name__ for o in adagrad] == ["Adagrad", "Adagrad"]

    table_before = model.item_embedding.weight.detach().clone()
    cfg = config(epochs=6, sparse_embeddings=True, grad_clip_norm=10.0, scheduler="cosine")
    state = Trainer(cfg).fit(model, TASK, epoch_batches(data), auc_evaluator(data, TASK))
    losses = [log["train_loss"] for log in state.log_history if "train_loss" in log]
    assert losses[-1] < 0.8 * losses[0]
    assert not torch.equal(model.item_embedding.weight, table_before)


def test_sparse_embedding_without_the_flag_is_a_config_error():
    from recstack.training import ConfigError

    with pytest.raises(ConfigError, match="^sparse_embeddings: "):
        Trainer(config()).fit(SparseItemModel(), TASK, epoch_batches(planted_data()))


def test_fp16_is_ignored_with_a_warning_on_cpu():
    with pytest.warns(UserWarning, match="mixed_precision=fp16 is ignored on cpu"):
        trainer = Trainer(config(epochs=1, mixed_precision="fp16"))
    state = trainer.fit(LogisticRegression(), TASK, epoch_batches(planted_data()))
    assert state.global_step == 8


def test_bf16_on_a_cpu_without_native_bfloat16_is_ignored_with_a_warning(monkeypatch):
    import recstack.training.device as device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        trainer = Trainer(config(epochs=1, mixed_precision="bf16"))
    assert trainer.precision.value == "no"


@pytest.mark.skipif(not __import__("recstack.training.device", fromlist=["x"]).cpu_has_native_bf16(), reason="needs a CPU with native bfloat16")
def test_bf16_on_cpu_runs_the_forward_in_bfloat16_and_learns():
    seen_dtypes = []

    class Recording(LogisticRegression):
        def forward(self, batch):
            logits = super().forward(batch)
            seen_dtypes.append(logits.dtype)
            return logits

    data = planted_data()
    model = Recording()
    state = Trainer(config(epochs=3, mixed_precision="bf16")).fit(model, TASK, epoch_batches(data), auc_evaluator(data, TASK))
    assert seen_dtypes and seen_dtypes[0] == torch.bfloat16  # the Linear ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert state.best_metric > 0.8
