"""trainer.compile: the same training through torch.compile, or eager with a warning."""

import warnings

import pytest
import torch

from recstack.tasks import BinaryClassificationTask
from recstack.training import Trainer, TrainerConfig
from recstack.training import compile as compile_module

from .toy import DIM, epoch_batches, planted_data

TASK = BinaryClassificationTask()


class ReluMLP(torch.nn.Module):
    """No dropout: compiled code draws its random numbers differently from eager."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def forward(self, batch):
        return self.mlp(batch.dense["x"]).squeeze(-1)  # (B,)


def _train(compile: bool) -> tuple[dict, list[float]]:
    torch.manual_seed(0)
    model = ReluMLP()
    config = TrainerConfig(epochs=2, lr=0.05, progress=False, device="cpu", compile=compile, log_every_steps=1)
    state = Trainer(config).fit(model, TASK, epoch_batches(planted_data(n=256)))
    return model.state_dict(), [log["loss"] for log in state.log_history if "loss" in log]


@pytest.mark.slow
def test_compiled_training_matches_eager_training():
    if compile_module._missing_toolchain(torch.device("cpu")) is not None:
        pytest.skip("no C++ compiler: inductor cannot build CPU kernels here")
    eager_weights, eager_losses = _train(compile=False)
    compiled_weights, compiled_losses = _train(compile=True)
    # same seed, same batches: only fused-kernel rounding differs
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for name, value in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], value, rtol=1e-3, atol=1e-5)
    assert compiled_losses[-1] < compiled_losses[0]


def test_without_a_compiler_training_runs_eagerly_with_a_warning(monkeypatch):
    monkeypatch.setattr(compile_module, "_missing_toolchain", lambda device: "no C++ compiler is on PATH")
    with pytest.warns(UserWarning, match="trainer.compile is set but no C\\+\\+ compiler"):
        weights, losses = _train(compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the eager run itself warns about nothing
        eager_weights, eager_losses = _train(compile=False)
    assert losses == eager_losses
    for name, value in eager_weights.items():
        assert torch.equal(weights[name], value)


def test_a_toolchain_that_fails_on_the_probe_means_eager_with_the_reason(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("cannot find omp.h")

    monkeypatch.setattr(compile_module, "_probed", {})
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: f"/usr/bin/{name}")  # a compiler is "there"
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = ReluMLP()
    with pytest.warns(UserWarning, match="probe function .*omp.h"):
        assert compile_module.compile_for_training(model, torch.device("cpu")) is model


def test_a_retrieval_model_trains_eagerly_with_a_warning():
    """A retrieval model trains through retrieval_pairs; behind the compiled wrapper a task took it
    for a bare two-tower module (one pair per row): it must stay the model itself."""
    from tests.retrieval_models.sequence_helpers import sequence_feature_map

    from recstack.models.registry import build_model

    model = build_model("sasrec", sequence_feature_map(), {"num_layers": 1})
    with pytest.warns(UserWarning, match="SASRec is a retrieval model, which trains through retrieval_pairs"):
        assert compile_module.compile_for_training(model, torch.device("cpu")) is model


def test_a_users_own_compiled_retrieval_model_trains_on_its_own_pairs():
    """``torch.compile(model)`` forwards attributes to the model: the tasks still see a retrieval
    model and train ``retrieval_pairs`` (every position), not ``forward`` (one pair per row)."""
    from tests.retrieval_models.sequence_helpers import sequence_batch, sequence_feature_map

    from recstack.models.registry import build_model
    from recstack.models.retrieval_contract import is_retrieval_model
    from recstack.tasks.full_softmax import FullSoftmaxTask

    torch.manual_seed(0)
    model = build_model("sasrec", sequence_feature_map(), {"num_layers": 1, "dropout": 0.0}).train()
    compiled = torch.compile(model)
    assert is_retrieval_model(compiled)
    batch = sequence_batch()
    torch.testing.assert_close(FullSoftmaxTask().loss(compiled, batch), FullSoftmaxTask().loss(model, batch))
