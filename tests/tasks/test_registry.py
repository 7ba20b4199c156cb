"""Tasks are typed, saved objects: a config's ``task:`` section parses once into a TaskSpec
(registered name + frozen Params), which is saved and rebuilds an equal task; unknown tasks and
parameters are ConfigErrors naming the key."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.tasks import (
    SCORE_HEAD,
    BinaryClassificationTask,
    InBatchSoftmaxTask,
    NegativeDistribution,
    NegativeSamplingTask,
    PointwiseTask,
    Regularized,
    Task,
    TaskSpec,
    TaskType,
    build_task,
    parse_task_section,
    task_names,
)

SECTIONS = [
    ({"type": "binary", "pos_weight": 1.5}, BinaryClassificationTask(pos_weight=1.5)),
    ("binary", BinaryClassificationTask()),
    ({"type": "retrieval", "loss": "pointwise", "gamma": 8, "pos_weight": 1.2}, PointwiseTask(gamma=8.0, pos_weight=1.2)),
    (
        {"type": "retrieval", "temperature": 0.1, "logq_correction": False, "item_feature": "movie"},
        InBatchSoftmaxTask(temperature=0.1, logq_correction=False, item_feature="movie"),
    ),
    (
        {"type": "retrieval", "loss": "negative_sampling", "num_negatives": 7, "distribution": "popularity", "seed": 3, "item_feature": "item_id"},
        NegativeSamplingTask(num_negatives=7, distribution="popularity", seed=3),
    ),
]


@pytest.mark.parametrize("section, expected", SECTIONS)
def test_config_section_to_task_to_saved_spec_and_back(section, expected):
    spec = parse_task_section(section)
    task = build_task(spec)
    assert task == expected and isinstance(task, Task)
    saved = json.loads(json.dumps(task.spec.to_dict()))  # what model.json holds
    rebuilt = build_task(saved)
    assert rebuilt == task and type(rebuilt) is type(task)
    assert TaskSpec.from_dict(saved) == task.spec


def test_the_saved_spec_names_the_task_its_family_and_typed_params():
    spec = parse_task_section({"type": "retrieval", "loss": "negative_sampling", "distribution": "POPULARITY"})
    assert spec.name == "negative_sampling" and spec.type is TaskType.RETRIEVAL
    assert spec.params.distribution is NegativeDistribution.POPULARITY
    assert spec.to_dict()["params"]["distribution"] == "popularity"
    assert parse_task_section(None).name == "binary" and parse_task_section({}).type is TaskType.BINARY


def test_a_registered_name_is_a_task_type_too():
    assert parse_task_section({"type": "pointwise", "gamma": 5}) == parse_task_section({"type": "retrieval", "loss": "pointwise", "gamma": 5})
    assert {"binary", "in_batch_softmax", "negative_sampling", "pointwise"} <= set(task_names())


@pytest.mark.parametrize(
    "section, message",
    [
        ({"type": "ranking"}, r"task\.type: must be one of .*'binary'.*'retrieval'.*got 'ranking'"),
        ({"type": "retrieval", "loss": "softmax"}, r"task\.loss: must be one of \['full_softmax', 'in_batch_softmax', 'negative_sampling', 'pointwise', 'sampled_bce', 'sampled_softmax'\], got 'softmax'"),
        ({"type": "binary", "pos_wieght": 2}, r"task\.pos_wieght: unknown parameter \(did you mean 'pos_weight'\?\)"),
        ({"type": "binary", "loss": "pointwise"}, r"task\.loss: unknown parameter"),
        ({"type": "retrieval", "temperature": 0}, r"task\.temperature: must be > 0"),
        ({"type": "retrieval", "temperature": "cold"}, r"task\.temperature: expected a number"),
        ({"type": "retrieval", "loss": "negative_sampling", "distribution": "zipf"}, r"task\.distribution: "),
        ({"type": "retrieval", "loss": "negative_sampling", "num_negatives": 0}, r"task\.num_negatives: must be >= 1"),
    ],
)
def test_unknown_tasks_and_parameters_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_task_section(section)


def test_old_run_folders_task_dicts_still_load():
    """model.json of older runs stored the config's flat task section (and target_column)."""
    assert build_task({"type": "binary"}) == BinaryClassificationTask()
    assert build_task({"type": "binary", "pos_weight": 1.2}) == BinaryClassificationTask(pos_weight=1.2)
    old = {"type": "retrieval", "loss": "pointwise", "gamma": 10, "pos_weight": 1.2, "target_column": "movie_id"}
    assert build_task(old) == PointwiseTask(gamma=10.0, pos_weight=1.2)
    assert build_task({"type": "retrieval", "temperature": 0.2}) == InBatchSoftmaxTask(temperature=0.2)


def test_a_damaged_saved_spec_names_the_key():
    with pytest.raises(ConfigError, match=r"task\.params\.gama: unknown parameter"):
        TaskSpec.from_dict({"name": "pointwise", "params": {"gama": 3}})
    with pytest.raises(ConfigError, match=r"task\.name: unknown task 'pointwize' \(did you mean 'pointwise'\?\)"):
        TaskSpec.from_dict({"name": "pointwize", "params": {}})


def test_single_head_tasks_name_their_one_head():
    class Bias(nn.Module):
        def forward(self, batch: Batch) -> torch.Tensor:
            return torch.linspace(-1, 1, len(batch))  # logits (B,)

    batch = Batch(dense={"x": torch.zeros(3, 1)}, label=torch.tensor([0.0, 1.0, 1.0]))
    task = BinaryClassificationTask()
    assert task.heads == (SCORE_HEAD,)
    heads = task.predict_heads(Bias(), batch)
    assert list(heads) == list(task.heads)
    torch.testing.assert_close(heads[SCORE_HEAD], task.predict(Bias(), batch))


def test_regularization_is_an_explicit_protocol():
    class Plain(nn.Module):
        def forward(self, batch: Batch) -> torch.Tensor:
            return torch.zeros(len(batch))

    class Penalised(Plain):
        def regularization(self, batch: Batch) -> torch.Tensor:
            return torch.tensor(0.5)

    batch = Batch(dense={"x": torch.zeros(2, 1)}, label=torch.tensor([0.0, 1.0]))
    assert isinstance(Penalised(), Regularized) and not isinstance(Plain(), Regularized)
    task = BinaryClassificationTask()
    assert task.loss(Penalised(), batch).item() == pytest.approx(task.loss(Plain(), batch).item() + 0.5)
