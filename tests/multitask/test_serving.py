"""Serving a multi-task ranker: ONNX == torch per head, the blended rank score, per-target scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from recstack.config import RunConfig
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.serving.blend import Blend, BlendKind
from recstack.serving.ranker_scorer import RankerScorer
from recstack.workflows.train import train_run

from .helpers import MODELS, SMALL_PARAMS, fitted, task_for, train, write_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return fitted(write_data(tmp_path_factory.mktemp("mt"), rows=(2000, 500, 500)))


@pytest.mark.parametrize(
    "name, batch_norm, weighting",
    [(name, False, "fixed") for name in MODELS] + [("mmoe", True, "fixed"), ("ple", True, "fixed"), ("ple", False, "uncertainty")],
)
def test_onnx_runtime_reproduces_every_head(name: str, batch_norm: bool, weighting: str, data) -> None:
    pre, train_batch, test_batch = data
    params = {**SMALL_PARAMS[name], "targets": ["click", "like"], "batch_norm": batch_norm, "loss_weighting": weighting}
    model = build_model(name, pre.feature_map(), params)
    task = task_for(model, loss_weighting=weighting)  # uncertainty: the learned weights are no input of the export
    train(model, task, train_batch, epochs=1)
    model.eval()
    scorer = RankerScorer(model=model, task=task, example=test_batch.select(slice(0, 64)))
    assert scorer.backend == "onnxruntime", scorer.failure
    rank, heads = scorer.score(test_batch)
    with torch.no_grad():
        eager = task.predict_heads(model, test_batch)
    assert list(heads) == ["click", "like", "click_and_like"]
    for head, values in heads.items():
        np.testing.assert_allclose(values, eager[head].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(rank, heads["click"] * heads["like"], rtol=1e-5)  # default: product of the targets


def test_blends() -> None:
    heads = {"click": np.array([0.5, 0.8]), "like": np.array([0.4, 0.1]), "click_and_like": np.array([0.2, 0.08])}
    np.testing.assert_allclose(Blend.parse("product:click=2,like=1")(heads), [0.1, 0.064], rtol=1e-6)
    np.testing.assert_allclose(Blend.parse("sum:click=0.5, click_and_like=2")(heads), [0.65, 0.56], rtol=1e-6)
    assert Blend.default(["click", "like"]) == Blend(BlendKind.PRODUCT, (("click", 1.0), ("like", 1.0)))
    for text, message in [("max:click=1", "expected product:HEAD=W"), ("sum:click", "'click' is not HEAD=WEIGHT"), ("sum:", "at least one")]:
        with pytest.raises(ConfigError, match=message):
            Blend.parse(text)
    with pytest.raises(ConfigError, match="the ranker has no head 'buy'; its heads: click, like, click_and_like"):
        Blend.parse("sum:buy=1").check(["click", "like", "click_and_like"])


@pytest.mark.slow
def test_the_service_returns_each_targets_score_and_ranks_by_the_blend(tmp_path: Path) -> None:
    from serving.tiny_runs import train_tiny_runs  # tests/serving's tiny two-tower run and data (tests/ is on the path)

    from recstack.serving.catalogue import Catalogue
    from recstack.serving.service import RecommendationService
    from recstack.serving.types import RecommendRequest

    dssm, _ = train_tiny_runs(tmp_path)
    data = tmp_path / "data"
    for split in ("train", "valid"):  # click = rating >= 4, like = rating 5 given click
        table = pq.read_table(data / f"ctr_{split}.parquet")
        click = table["label"]
        like = pc.multiply(click, pc.equal(table["rating"], 5.0).cast(pa.float32()))
        pq.write_table(table.append_column("click", click).append_column("like", like), data / f"mt_{split}.parquet")
    schema = (ROOT / "schemas" / "movielens_multitask.yaml").read_text()
    (tmp_path / "schema.yaml").write_text(schema)
    ranker = tmp_path / "mmoe"
    train_run(RunConfig.from_dict({
        "name": "tiny_mmoe", "data": {"train": str(data / "mt_train.parquet"), "valid": str(data / "mt_valid.parquet")},
        "schema": str(tmp_path / "schema.yaml"), "task": {"type": "multi_task"},
        "model": {"name": "mmoe", "params": {"num_experts": 2, "hidden_dims": [8], "tower_dims": [8]}},
        "loader": {"batch_size": 128}, "trainer": {"epochs": 1, "lr": 0.01, "monitor": "click_auc", "progress": False},
        "output": str(ranker)}), log=lambda _: None)  # fmt: skip
    catalogue = Catalogue.from_files(catalog=data / "items.parquet", users=data / "users.parquet", history=data / "retrieval_train.parquet")
    request = [RecommendRequest(user_id=1, k=8, candidates=30)]
    default = RecommendationService(retrieval_run=dssm, ranking_run=ranker, catalogue=catalogue, backend="exact")
    assert default.models.ranker_scorer.backend == "onnxruntime"
    items = default.recommend(request)[0].items
    assert len(items) == 8 and all(set(i.head_scores) == {"click", "like", "click_and_like"} for i in items)
    for item in items:
        assert item.rank_score == pytest.approx(item.head_scores["click"] * item.head_scores["like"], rel=1e-5)
        assert item.head_scores["click_and_like"] == pytest.approx(item.rank_score, rel=1e-5)
    assert [i.rank_score for i in items] == sorted((i.rank_score for i in items), reverse=True)
    assert "head_scores" in items[0].to_dict()
    by_click = RecommendationService(retrieval_run=dssm, ranking_run=ranker, catalogue=catalogue, backend="exact", blend=Blend.parse("sum:click=1"))
    clicked = by_click.recommend(request)[0].items
    assert [i.rank_score for i in clicked] == pytest.approx([i.head_scores["click"] for i in clicked])
    assert [i.head_scores["click"] for i in clicked] == sorted((i.head_scores["click"] for i in clicked), reverse=True)
