"""A single-task ranker as a multi-task ranker's feature part (``feature_part: {name, params}``):
the part is the ranker without its output module, trains with the targets' losses and its own
penalty, learns a signal planted in the history, saves, loads and exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.errors import ConfigError
from recstack.evaluation.ranking_metrics import auc
from recstack.export.run_folder import RunPaths, load_run, save_model, task_from_run
from recstack.models import build_model
from recstack.models.feature_part import feature_part_models
from recstack.schema import Schema
from recstack.serving.ranker_scorer import RankerScorer
from recstack.tasks.multi_task import MultiTaskTask

SCHEMA = {
    "targets": [{"name": "click"}, {"name": "like", "condition": "click"}],
    "embedding_dim": 8,
    "tables": {"cat": {"dim": 8}},
    "features": [
        {"name": "item_cat", "kind": "categorical", "table": "cat"},
        {"name": "hist_cats", "kind": "sequence", "table": "cat", "maxlen": 4},
        {"name": "user_group", "kind": "categorical"},
        {"name": "x", "kind": "numeric"},
    ],
}
BEHAVIOURS = [{"candidate": "item_cat", "history": "hist_cats"}]
PARTS = {  # small sizes of every ranker that can be a feature part
    "din": {"behaviours": BEHAVIOURS, "hidden_dims": [16], "attention_hidden_dims": [8]},
    "dien": {"behaviours": BEHAVIOURS, "hidden_dims": [16], "aux_hidden_dims": [8], "aux_loss_weight": 0.5},
    "bst": {"behaviours": BEHAVIOURS, "hidden_dims": [16]},
    "dcn": {"hidden_dims": [16], "num_cross_layers": 2},
    "dcn_v2": {"hidden_dims": [16], "num_cross_layers": 2},
    "deep_crossing": {"residual_hidden_dims": [16]},
    "embedding_mlp": {"hidden_dims": [16]},
}
MMOE = {"targets": ["click", "like"], "num_experts": 2, "hidden_dims": [16], "tower_dims": [8]}


def _table(rows: int, rng: np.random.Generator) -> pa.Table:
    """click is planted on whether the candidate's category is in the history, like given click on x."""
    cats, length = 8, 4
    history = rng.integers(0, cats, (rows, length))
    item_cat = rng.integers(0, cats, rows)
    seen = (history == item_cat[:, None]).any(1)
    x = rng.normal(size=rows)
    click = (rng.random(rows) < np.where(seen, 0.85, 0.15)).astype(np.float32)
    like = click * (rng.random(rows) < 1 / (1 + np.exp(-2 * x)))
    return pa.table({
        "item_cat": item_cat, "hist_cats": pa.array(list(history)), "user_group": rng.integers(0, 4, rows),
        "x": x.astype(np.float32), "click": click, "like": like.astype(np.float32),
    })  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("part")
    batches = {}
    pre = Preprocessor(Schema.from_dict(SCHEMA))
    for name, rows in (("train", 6000), ("test", 2000)):
        pq.write_table(_table(rows, rng), folder / f"{name}.parquet")
        chunk = Chunk(pq.read_table(folder / f"{name}.parquet").combine_chunks().to_batches()[0], name, 1)
        if name == "train":
            pre.fit([chunk])
        batches[name] = pre.transform(chunk)
    return pre, batches["train"], batches["test"]


def build(pre: Preprocessor, part: str, model: str = "mmoe", **params):
    base = MMOE if model == "mmoe" else {"targets": ["click", "like"], "hidden_dims": [16], "tower_dims": [8]}
    return build_model(model, pre.feature_map(), {**base, "feature_part": {"name": part, "params": PARTS[part]}, **params})


def task_for(model) -> MultiTaskTask:
    task = MultiTaskTask().with_schema_targets(Schema.from_dict(SCHEMA).targets)
    task.check_model(model)
    return task


def test_the_parts_are_the_rankers_with_one_output_module() -> None:
    assert sorted(feature_part_models()) == sorted(PARTS)


@pytest.mark.parametrize("part", list(PARTS))
def test_the_part_is_the_ranker_without_its_output_module(part: str, data) -> None:
    pre, train_batch, _ = data
    model = build(pre, part)
    ranker = model.feature_part
    head = type(ranker).head_module
    assert not any(key.startswith(f"feature_part.{head}.") for key in model.state_dict())  # no unused head weights
    alone = build_model(part, pre.feature_map(), PARTS[part])  # the same ranker, ranking alone
    missing, unexpected = alone.load_state_dict(ranker.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith(f"{head}.") for key in missing)
    model.eval(), alone.eval()
    rows = train_batch.select(slice(0, 64))
    with torch.no_grad():
        torch.testing.assert_close(model.features(rows), alone.head_input(rows))
    assert model.features(rows).shape == (64, ranker.head_input_dim)
    with pytest.raises(TypeError, match="feature part"):
        ranker(rows)
    # every parameter (the part's included) gets a gradient from the multi-task loss
    model.train()
    logits = model(rows)
    assert list(logits) == ["click", "like"] and all(v.shape == (64,) for v in logits.values())
    task_for(model).loss(model, rows).backward()
    missing_grads = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing_grads


def test_the_parts_own_penalty_is_added_to_the_targets_losses(data) -> None:
    pre, train_batch, _ = data
    model = build(pre, "dien").train()  # DIEN's auxiliary loss, weight 0.5
    task = task_for(model)
    rows = train_batch.select(slice(0, 128))
    torch.manual_seed(3)
    loss = task.loss(model, rows)
    logits = model(rows)
    torch.manual_seed(3)
    penalty = model.feature_part.regularization(rows)
    targets = task.target_losses(logits, rows, entire_space=False)
    assert penalty.item() > 0
    torch.testing.assert_close(loss, targets["click"] + targets["like"] + penalty)
    plain = build_model("mmoe", pre.feature_map(), MMOE)
    assert plain.regularization(rows).item() == 0.0  # no part: nothing added


def test_learns_a_signal_planted_in_the_history(data) -> None:
    pre, train_batch, test_batch = data
    din = {**PARTS["din"], "hidden_dims": [32], "attention_hidden_dims": [16], "embedding_init_std": 0.1}
    model = build_model("mmoe", pre.feature_map(), {**MMOE, "feature_part": {"name": "din", "params": din}})
    task = task_for(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(12):
        order = torch.randperm(len(train_batch), generator=generator)
        for start in range(0, len(train_batch), 256):
            loss = task.loss(model, train_batch.select(order[start : start + 256]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        heads = task.predict_heads(model, test_batch)
    click = test_batch.labels["click"].numpy()
    clicked = click == 1
    click_auc = auc(click, heads["click"].numpy())
    like_auc = auc(test_batch.labels["like"].numpy()[clicked], heads["like"].numpy()[clicked])
    assert click_auc > 0.75 and like_auc > 0.7, (click_auc, like_auc)  # oracle ~0.85 / ~0.8; chance 0.5


@pytest.mark.parametrize("model_name, part", [("esmm", "din"), ("mmoe", "dcn"), ("ple", "bst")])
def test_save_load_and_onnx_give_the_same_scores(model_name: str, part: str, data, tmp_path: Path) -> None:
    pre, train_batch, test_batch = data
    params = {"hidden_dims": [16], "tower_dims": [8]} if model_name == "esmm" else {}
    if model_name == "ple":
        params = {"num_levels": 1, "num_shared_experts": 1, "num_specific_experts": 1, "hidden_dims": [16], "tower_dims": [8]}
    spec = {"targets": ["click", "like"], **params, "feature_part": {"name": part, "params": PARTS[part]}}
    model = build_model(model_name, pre.feature_map(), spec)
    task = task_for(model)
    model.train()
    task.loss(model, train_batch.select(slice(0, 256))).backward()  # batch norm / Dice statistics move
    paths = RunPaths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    pre.save(paths.preprocessor)
    save_model(paths, model, name=model_name, params=spec, task=task.spec.to_dict())
    run = load_run(tmp_path)
    model.eval()
    rows = test_batch.select(slice(0, 200))
    with torch.no_grad():
        expected, got = task.predict_heads(model, rows), task_from_run(run).predict_heads(run.model, rows)
    assert all(torch.equal(expected[h], got[h]) for h in task.heads)
    scorer = RankerScorer(model=model, task=task, example=rows.select(slice(0, 64)))
    assert scorer.backend == "onnxruntime", scorer.failure
    _, heads = scorer.score(rows)
    for head, values in heads.items():
        np.testing.assert_allclose(values, expected[head].numpy(), atol=1e-5, rtol=0)


def test_bad_feature_parts_are_config_errors_naming_the_key(data) -> None:
    pre, _, _ = data
    feature_map = pre.feature_map()
    with pytest.raises(ConfigError, match=r"model\.params\.feature_part\.name: 'deepfm' has no single vector before its logit.*'din'"):
        build_model("mmoe", feature_map, {**MMOE, "feature_part": {"name": "deepfm"}})
    with pytest.raises(ConfigError, match=r"model\.params\.feature_part\.name: unknown model 'dinn'"):
        build_model("mmoe", feature_map, {**MMOE, "feature_part": {"name": "dinn"}})
    with pytest.raises(ConfigError, match=r"model\.params\.feature_part\.params\.hiden_dims: unknown parameter \(did you mean 'hidden_dims'\?\)"):
        build_model("mmoe", feature_map, {**MMOE, "feature_part": {"name": "dcn", "params": {"hiden_dims": [8]}}})
    with pytest.raises(ConfigError, match=r"model\.params\.embedding_init_std: the feature part \(dcn\) embeds the features: set embedding_init_std in feature_part\.params"):
        build_model("mmoe", feature_map, {**MMOE, "embedding_init_std": 0.001, "feature_part": {"name": "dcn"}})
    with pytest.raises(ConfigError, match=r"model\.params\.feature_part: expected a mapping"):
        build_model("mmoe", feature_map, {**MMOE, "feature_part": "din"})


def test_the_loader_reads_the_parts_features() -> None:
    from recstack.models.registry import model_class

    params = model_class("mmoe").Params.from_dict(
        {**MMOE, "feature_part": {"name": "din", "params": {"behaviours": BEHAVIOURS, "features": ["user_group", "item_cat"]}}}
    )
    assert params.features_read() == {"user_group", "item_cat", "hist_cats"}
    assert model_class("mmoe").Params.from_dict(MMOE).features_read() is None  # every feature
    assert params.to_dict()["feature_part"] == {"name": "din", "params": {"behaviours": BEHAVIOURS, "features": ["user_group", "item_cat"]}}
