"""AITM (Xi et al., KDD 2021): one-way information transfer between funnel steps, the AIT
weights, the behavioural expectation calibrator, learning, export and the run workflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import RunConfig
from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.models.aitm import AITM, InformationTransfer
from recstack.schema import Schema
from recstack.serving.ranker_scorer import RankerScorer
from recstack.tasks.multi_task import MultiTaskTask
from recstack.workflows.train import train_run

from .helpers import SCHEMA, head_aucs, read_batch, task_for, train, write_data

FUNNEL = {**SCHEMA, "targets": [{"name": "click"}, {"name": "like"}]}  # like: P(click and like), 0 where click = 0
PARAMS = {"hidden_dims": [32, 16], "targets": ["click", "like"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Preprocessor, Batch, Batch]:
    folder = write_data(tmp_path_factory.mktemp("aitm"), rows=(8000, 2000, 3000))
    import pyarrow.parquet as pq

    pre = Preprocessor(Schema.from_dict(FUNNEL))
    pre.fit([Chunk(pq.read_table(folder / "train.parquet").combine_chunks().to_batches()[0], "train", 1)])
    return folder, pre, read_batch(pre, folder / "train.parquet"), read_batch(pre, folder / "test.parquet")


def funnel_task(model: AITM) -> MultiTaskTask:
    task = MultiTaskTask().with_schema_targets(Schema.from_dict(FUNNEL).targets)
    task.check_model(model)
    return task


def test_information_flows_one_way_and_the_transfer_weights_sum_to_one(data) -> None:
    _, pre, train_batch, _ = data
    torch.manual_seed(0)
    model = build_model("aitm", pre.feature_map(), PARAMS)
    batch = train_batch.select(slice(0, 64))
    logits = model(batch)
    assert set(logits) == {"click", "like"} and logits["click"].shape == (64,)
    later = list(model.step_towers[1].parameters()) + list(model.information.parameters())
    click_grads = torch.autograd.grad(logits["click"].sum(), later, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in click_grads)  # the click step never reads the like step
    like_grads = torch.autograd.grad(logits["like"].sum(), list(model.step_towers[0].parameters()), allow_unused=True)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in like_grads)  # the like step reads the click step
    weights = model.transfer_weights(batch)
    assert len(weights) == 1 and weights[0].shape == (64, 2)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(64))
    assert (weights[0] > 0).all()


def test_the_ait_module_is_the_papers_attention_by_hand() -> None:
    torch.manual_seed(1)
    ait = InformationTransfer(4)
    p, q = torch.randn(3, 4), torch.randn(3, 4)
    out = ait(p, q)
    for row in range(3):
        scores = [float((ait.query(u[row]) @ ait.key(u[row])).detach()) / 2.0 for u in (p, q)]  # <h1(u), h2(u)> / sqrt(4)
        w = np.exp(scores) / np.exp(scores).sum()
        expected = w[0] * ait.value(p[row]) + w[1] * ait.value(q[row])
        torch.testing.assert_close(out[row], expected, rtol=1e-5, atol=1e-6)


def test_the_calibrator_penalises_a_later_step_more_probable_than_the_earlier_one(data) -> None:
    _, pre, train_batch, _ = data
    model = build_model("aitm", pre.feature_map(), {**PARAMS, "calibration_weight": 0.6})
    click, like = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, -3.0, -1.0])  # only row 0 breaks the funnel
    expected = 0.6 * (torch.sigmoid(torch.tensor(1.0)) - 0.5) / 3
    torch.testing.assert_close(model.output_penalty({"click": click, "like": like}), expected)
    assert model.output_penalty({"click": like.abs() + 1, "like": -like.abs() - 1}).item() == 0.0
    off = build_model("aitm", pre.feature_map(), {**PARAMS, "calibration_weight": 0})
    assert off.output_penalty({"click": click, "like": like}) is None
    batch = train_batch.select(slice(0, 32))  # the task adds it to the loss
    with torch.no_grad():
        logits = model(batch)
        plain = MultiTaskTask(targets=funnel_task(model).targets)
        expected_loss = sum(plain.target_losses(logits, batch, entire_space=False).values()) + model.output_penalty(logits)
        assert funnel_task(model).loss(model, batch).item() == pytest.approx(expected_loss.item(), rel=1e-6)


def test_it_learns_both_planted_funnel_steps_and_onnx_reproduces_them(data) -> None:
    _, pre, train_batch, test_batch = data
    torch.manual_seed(0)
    model = build_model("aitm", pre.feature_map(), PARAMS)
    task = funnel_task(model)
    train(model, task, train_batch, epochs=5, lr=0.005)
    model.eval()
    with torch.no_grad():
        heads = task.predict_heads(model, test_batch)
    click, like = test_batch.labels["click"].numpy(), test_batch.labels["like"].numpy()
    from recstack.evaluation.ranking_metrics import auc

    aucs = auc(click, heads["click"].numpy()), auc(like, heads["like"].numpy())
    assert aucs[0] > 0.66 and aucs[1] > 0.64, aucs  # chance 0.5; the oracle ~0.82 on both (as tests/multitask/test_models.py)
    assert list(heads) == ["click", "like"]  # no conditioned target, no joint head
    scorer = RankerScorer(model=model, task=task, example=test_batch.select(slice(0, 64)))
    assert scorer.backend == "onnxruntime", scorer.failure
    rank, exported = scorer.score(test_batch)
    for head, values in exported.items():
        np.testing.assert_allclose(values, heads[head].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(rank, exported["like"], rtol=1e-5)  # default rank: the last step, P(click and like)


def test_a_conditioned_or_regression_target_is_a_config_error(data) -> None:
    _, pre, _, _ = data
    model = build_model("aitm", pre.feature_map(), PARAMS)
    with pytest.raises(ConfigError, match=r"AITM predicts each funnel step over every row.*target 'like' is conditioned on 'click'"):
        task_for(model)  # the conditioned schema of the other models' tests
    with pytest.raises(ConfigError, match="needs at least 2 target"):
        build_model("aitm", pre.feature_map(), {**PARAMS, "targets": ["click"]})
    with pytest.raises(Exception, match="calibration_weight"):
        build_model("aitm", pre.feature_map(), {**PARAMS, "calibration_weight": -1})


def test_recstack_train_runs_aitm_and_its_saved_model_reloads(data, tmp_path: Path) -> None:
    folder = data[0]
    run = tmp_path / "run"
    config = RunConfig.from_dict(
        {
            "name": "aitm",
            "data": {split: str(folder / f"{split}.parquet") for split in ("train", "valid", "test")},
            "schema": FUNNEL,
            "task": {"type": "multi_task"},
            "model": {"name": "aitm", "params": {"hidden_dims": [32, 16]}},
            "loader": {"batch_size": 256, "shuffle_buffer": 10000},
            "trainer": {"epochs": 3, "lr": 0.005, "monitor": "like_auc", "progress": False},
            "output": str(run),
            "threads": 1,
        }
    )
    metrics = train_run(config, log=lambda _: None)
    assert metrics["test"]["click_auc"] > 0.6 and metrics["test"]["like_auc"] > 0.6, metrics["test"]
    assert "click_and_like_auc" not in metrics["test"]
    assert metrics["test"]["like_above_click_rows"] == 0  # the generator's like is 0 where click is 0
    assert json.loads((run / "model.json").read_text())["name"] == "aitm"
    from recstack.workflows.predict import evaluate_run
    from recstack.data.sources import DataSource

    reloaded = evaluate_run(run, DataSource.from_config(str(folder / "test.parquet")), write=False)
    assert reloaded["like_auc"] == pytest.approx(metrics["test"]["like_auc"])


def test_the_funnel_schema_holds_the_conditioned_schemas_features() -> None:
    root = Path(__file__).resolve().parents[2]
    funnel, conditioned = (Schema.from_yaml(root / "schemas" / f"{name}.yaml") for name in ("movielens_multitask_funnel", "movielens_multitask"))
    assert funnel.features == conditioned.features and funnel.tables == conditioned.tables
    assert [(t.name, t.condition) for t in funnel.targets] == [("click", None), ("like", None)]


def test_the_evaluation_counts_rows_that_break_the_funnel() -> None:
    from recstack.evaluation.multi_task_metrics import multi_task_report
    from recstack.tasks.multi_task import TargetParams

    targets = (TargetParams(name="click"), TargetParams(name="like"))
    labels = {"click": np.array([1.0, 0, 0, 1]), "like": np.array([1.0, 1, 0, 0])}  # row 1: like without a click
    heads = {"click": np.array([0.9, 0.2, 0.1, 0.7]), "like": np.array([0.5, 0.1, 0.1, 0.3])}
    assert multi_task_report(targets, labels, heads, funnel=True)["like_above_click_rows"] == 1
    assert "like_above_click_rows" not in multi_task_report(targets, labels, heads)
