"""The "How to add a task" recipe of docs/architecture.md, followed from outside the package: the
new task parses from a config section, saves and rebuilds like the built-in ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.models.params import require
from recstack.tasks import RegisteredTask, SingleHeadTask, TaskParams, TaskType, build_task, parse_task_section, register_task


@register_task("test_focal")
class FocalTask(RegisteredTask, SingleHeadTask):
    family: ClassVar[TaskType] = TaskType.BINARY

    @dataclass(frozen=True, kw_only=True)
    class Params(TaskParams):
        gamma: float = 2.0

        def validate(self) -> None:
            require(self.gamma >= 0, "gamma", f"must be >= 0, got {self.gamma}")

    def __init__(self, *, gamma: float = 2.0) -> None:
        self.params = self.Params(gamma=gamma)
        self.gamma = self.params.gamma

    @classmethod
    def from_params(cls, params: "FocalTask.Params") -> "FocalTask":
        return cls(gamma=params.gamma)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch).float()  # (B,)
        bce = F.binary_cross_entropy_with_logits(logits, batch.label, reduction="none")  # (B,)
        p_true = torch.exp(-bce)
        return ((1 - p_true) ** self.gamma * bce).mean()

    def predict(self, model: nn.Module, batch: Batch) -> Tensor:
        return torch.sigmoid(model(batch).float())  # (B,)


class Constant(nn.Module):
    def forward(self, batch: Batch) -> Tensor:
        return torch.zeros(len(batch))  # logits (B,)


def test_a_new_task_follows_the_config_save_rebuild_path():
    spec = parse_task_section({"type": "test_focal", "gamma": 1})
    task = build_task(spec)
    assert isinstance(task, FocalTask) and task.gamma == 1.0 and spec.type is TaskType.BINARY
    assert build_task(task.spec.to_dict()) == task
    batch = Batch(dense={"x": torch.zeros(2)}, label=torch.tensor([1.0, 0.0]))
    assert task.loss(Constant(), batch).item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item())  # (1 - 1/2)^1 * log 2
    with pytest.raises(ConfigError, match=r"task\.gama: unknown parameter \(did you mean 'gamma'\?\)"):
        parse_task_section({"type": "test_focal", "gama": 1})


def test_registration_checks_the_contract():
    with pytest.raises(TypeError, match="Params must subclass TaskParams"):

        @register_task("test_no_params")
        class NoParams:  # noqa: F841
            family = TaskType.BINARY

    with pytest.raises(ValueError, match="already taken"):

        @register_task("binary")
        class Impostor(FocalTask):  # noqa: F841
            pass
