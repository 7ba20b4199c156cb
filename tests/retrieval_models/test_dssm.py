"""DSSM two towers: unit vectors, standalone towers equal to the training model, shared tables."""

import pytest
import torch

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.errors import ConfigError
from recstack.models.dssm import TwoTower
from recstack.models.registry import build_model
from recstack.schema import Schema
from recstack.tasks.retrieval import InBatchSoftmaxTask, NegativeSamplingTask, PointwiseTask

from .helpers import NUM_ITEM_ROWS, make_batch


def test_features_split_by_side_and_towers_output_unit_vectors(feature_map) -> None:
    model = build_model("dssm", feature_map, {"hidden_dims": [16, 8]})
    assert model.user_tower().input_names == ("user_id", "hist_item_ids", "tags", "tags__weights", "age")
    assert model.item_tower().input_names == ("item_id", "item_cat", "item_vec")
    users, items = model(make_batch(6))
    assert users.shape == items.shape == (6, 8)
    assert torch.allclose(users.norm(dim=-1), torch.ones(6), atol=1e-6)
    assert torch.allclose(items.norm(dim=-1), torch.ones(6), atol=1e-6)


def test_default_tower_is_seed_001s(feature_map) -> None:
    model = TwoTower(feature_map=feature_map)
    layers = model.user_tower().mlp.layers
    assert [layer.linear.out_features for layer in layers] == [256, 256, 128]
    assert type(layers[-1].activation).__name__ == "Tanh"


@pytest.mark.parametrize("options", [{}, {"batch_norm": True, "dropout": 0.2}])
def test_each_tower_alone_equals_the_training_model(feature_map, options) -> None:
    model = build_model("dssm", feature_map, {"hidden_dims": [16, 8], **options})
    batch = make_batch(7)
    model.train()
    model(batch)  # a training step moves batch-norm statistics: the towers must see them too
    model.eval()
    user_tower, item_tower = model.user_tower(), model.item_tower()
    with torch.no_grad():
        users = user_tower(*user_tower.inputs_from_batch(batch).values())
        items = item_tower(*item_tower.inputs_from_batch(batch).values())
        assert torch.equal(users, model.encode_user(batch))
        assert torch.equal(items, model.encode_item(batch))


def test_shared_table_is_one_module_trained_once(feature_map) -> None:
    model = build_model("dssm", feature_map, {"hidden_dims": [8]})
    history_table = model.user_tower().embeddings.table("hist_item_ids")
    assert history_table is model.item_tower().embeddings.table("item_id")
    weights = [p for p in model.parameters() if p is history_table.weight]
    assert len(weights) == 1  # parameters() yields it once: one optimiser slot
    task = InBatchSoftmaxTask(logq_correction=False)
    task.loss(model, make_batch(8)).backward()
    assert history_table.weight.grad is not None


def test_towers_over_pretrained_vectors_only() -> None:
    """Seed 000: 128-d vectors per user and per item, no id embedding at all."""
    schema = Schema.from_dict({"label": "label", "features": [
        {"name": "user_vec", "kind": "vector", "dim": 128, "side": "user"},
        {"name": "item_vec", "kind": "vector", "dim": 128, "side": "item"},
    ]})
    model = build_model("dssm", FeatureMap(schema=schema, tables={}), {})
    batch = Batch(dense={"user_vec": torch.randn(5, 128), "item_vec": torch.randn(5, 128)},
                  label=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))
    users, items = model(batch)
    assert users.shape == items.shape == (5, 128)
    loss = PointwiseTask(gamma=10.0, pos_weight=1.2).loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.user_tower().input_names == ("user_vec",)


def test_bad_params_name_the_key(feature_map) -> None:
    with pytest.raises(ConfigError, match="model.params.hiden_dims"):
        build_model("dssm", feature_map, {"hiden_dims": [8]})
    with pytest.raises(ConfigError, match="model.params.item_features"):
        build_model("dssm", feature_map, {"features": ["user_id", "age"]})
    with pytest.raises(ConfigError, match="model.params.user_features"):
        build_model("dssm", feature_map, {"user_features": ["nope"]})


def test_encode_item_rows_id_only_and_from_a_catalogue(feature_map) -> None:
    id_only = build_model("dssm", feature_map, {"hidden_dims": [8], "item_features": ["item_id"]})
    rows = torch.tensor([2, 5, 5])
    batch = Batch(ids={"item_id": rows})
    assert torch.equal(id_only.encode_item_rows(rows), id_only.encode_item(batch))

    model = build_model("dssm", feature_map, {"hidden_dims": [8]})
    with pytest.raises(ValueError, match="set_item_catalogue"):
        model.encode_item_rows(rows)
    catalogue = make_batch(NUM_ITEM_ROWS - 2)
    catalogue.ids["item_id"] = torch.arange(NUM_ITEM_ROWS - 1, 1, -1)  # every item once, any order
    model.set_item_catalogue(catalogue)
    picked = torch.tensor([NUM_ITEM_ROWS - 1 - 5, NUM_ITEM_ROWS - 1 - 2])  # catalogue positions of rows 5, 2
    assert torch.allclose(model.encode_item_rows(torch.tensor([5, 2])), model.encode_item(catalogue.select(picked)))

    task = NegativeSamplingTask(num_negatives=4, seed=0)
    loss = task.loss(model, make_batch(6))
    loss.backward()
    assert torch.isfinite(loss)
