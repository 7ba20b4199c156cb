"""The Trainer's seams for a model that manages itself: given optimisers, placement and the
best-weights snapshot go through methods a wrapper (a sharded model) can replace."""

import torch
from torch import nn

from recstack.tasks import BinaryClassificationTask
from recstack.training import Trainer, TrainerConfig

from .toy import LogisticRegression, epoch_batches, planted_data, same_weights, scripted_evaluator

TASK = BinaryClassificationTask()


def config(**overrides) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 3, "lr": 0.05, "progress": False, "device": "cpu", **overrides})


def test_fit_steps_the_optimizers_it_is_given_and_builds_none():
    class NoBuilding(Trainer):
        def build_optimizers(self, model: nn.Module):
            raise AssertionError("fit was given its optimizers")

    model = LogisticRegression()
    bias_before = model.linear.bias.detach().clone()
    weight_before = model.linear.weight.detach().clone()
    sgd = torch.optim.SGD([model.linear.weight], lr=0.5)  # the bias is left out: it must not move
    state = NoBuilding(config()).fit(model, TASK, epoch_batches(planted_data()), optimizers=[sgd])
    assert state.global_step == 3 * 8
    assert torch.equal(model.linear.bias, bias_before)
    assert not torch.equal(model.linear.weight, weight_before)


def test_given_optimizers_reach_the_same_weights_as_the_built_ones():
    torch.manual_seed(0)
    built, given = LogisticRegression(), LogisticRegression()
    given.load_state_dict(built.state_dict())
    trainer = Trainer(config())
    trainer.fit(built, TASK, epoch_batches(planted_data()))
    optimizers = Trainer(config()).build_optimizers(given)
    Trainer(config()).fit(given, TASK, epoch_batches(planted_data()), optimizers=optimizers)
    assert same_weights(built.state_dict(), given.state_dict())


def test_best_weights_go_through_snapshot_and_restore_methods():
    calls: list[str] = []

    class Recording(Trainer):
        def place_model(self, model: nn.Module) -> nn.Module:
            calls.append("place")
            return super().place_model(model)

        def snapshot_weights(self, model: nn.Module):
            calls.append("snapshot")
            return {name: value.detach().clone() for name, value in model.state_dict().items()}

        def restore_weights(self, model: nn.Module, weights) -> None:
            calls.append("restore")
            model.load_state_dict(weights)

    evaluate, seen = scripted_evaluator([0.5, 0.8, 0.6])
    model = LogisticRegression()
    state = Recording(config()).fit(model, TASK, epoch_batches(planted_data()), evaluate)
    assert calls == ["place", "snapshot", "snapshot", "restore"]  # improved at epochs 0 and 1
    assert state.best_epoch == 1 and same_weights(model.state_dict(), seen[1])
