"""``Params.features_read()``: the features a ranking model's params name are all it reads, so a
batch holding only those (what the loader transforms, ``workflows.tasks.features_read``) gives the
outputs and loss of a batch holding every feature of the schema."""

from __future__ import annotations

import pytest
import torch

from recstack.models import build_model, model_class
from recstack.tasks.base import Regularized

from .helpers import fit, full_records, full_schema, model_params, write_pretrained
from .sequence_rankers import BEHAVIOURS

SUBSET = ["user_id", "genre", "age", "price"]  # a categorical, a bucketised and a plain numeric feature
CASES = {
    "lr": {},
    "fm": {},
    "embedding_mlp": {"hidden_dims": [16, 8]},
    "deep_crossing": {"residual_hidden_dims": [16, 8]},
    "deepfm": {"hidden_dims": [16, 8]},
    "dcn": {"hidden_dims": [16], "num_cross_layers": 2},
    "dcn_v2": {"hidden_dims": [16], "num_cross_layers": 2},
    "wide_deep": {"hidden_dims": [16], "wide_features": ["item_id", "age"], "cross_features": [["user_id", "item_pre"]], "cross_buckets": 97},
    "din": {**model_params("din"), "behaviours": BEHAVIOURS},
    "bst": {"behaviours": BEHAVIOURS, "num_heads": 2, "hidden_dims": [16]},
    "dien": {"behaviours": BEHAVIOURS, "hidden_dims": [16], "aux_hidden_dims": [8]},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre, records


def only(pre, records, names):
    return pre.transform(records, features=[n for n in pre.schema.names if n in names])


@pytest.mark.parametrize("name", list(CASES))
def test_a_batch_of_the_named_features_gives_the_full_batchs_outputs(world, name):
    pre, records = world
    params = model_class(name).Params.from_dict({**CASES[name], "features": SUBSET})
    named = params.features_read()
    assert named is not None and set(SUBSET) <= named
    assert named < set(pre.schema.names)  # something is left unread
    model = build_model(name, pre.feature_map(), params)
    full, pruned = pre.transform(records), only(pre, records, named)
    assert set(pruned.ids) | set(pruned.sequences) | set(pruned.dense) == named
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pruned), model(full), rtol=0, atol=0)
    model.train()  # training-only reads too: DIEN's auxiliary loss is its regularization

    def loss(batch):
        torch.manual_seed(0)
        value = model(batch).sum()
        return value + model.regularization(batch) if isinstance(model, Regularized) else value

    torch.testing.assert_close(loss(pruned), loss(full), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_without_a_feature_list_every_feature_may_be_read(name):
    params = model_class(name).Params.from_dict({**CASES[name]})
    assert params.features_read() is None


def test_wide_deep_reads_its_wide_and_cross_features_too():
    params = model_class("wide_deep").Params.from_dict({**CASES["wide_deep"], "features": ["age"]})
    assert params.features_read() == {"age", "item_id", "user_id", "item_pre"}
    assert model_class("wide_deep").Params.from_dict({"features": ["age"]}).features_read() is None  # wide: every feature
