"""Every registered ranking model: logits (B,), gradients, frozen tables, save and load."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from recstack.models import build_model, model_names

from .helpers import DIM, fit, full_records, full_schema, model_params, write_pretrained

RANKING_MODELS = ["lr", "fm", "embedding_mlp", "deep_crossing", "wide_deep", "deepfm", "dcn", "dcn_v2", "din"]
CASES = [pytest.param(name, model_params(name), id=name) for name in RANKING_MODELS] + [
    pytest.param("dcn_v2", model_params("dcn_v2", low_rank=4), id="dcn_v2-low_rank"),
    pytest.param(
        "dcn_v2",
        model_params("dcn_v2", low_rank=4, num_experts=3, structure="stacked"),
        id="dcn_v2-mixture-stacked",
    ),
    pytest.param("din", model_params("din", attention_softmax=True, activation="prelu"), id="din-softmax"),
    pytest.param("din", model_params("din", l2_reg=1e-3), id="din-l2"),
    pytest.param("embedding_mlp", model_params("embedding_mlp", batch_norm=True, dropout=0.1), id="embedding_mlp-bn"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label)
    if hasattr(model, "regularization"):
        loss = loss + model.regularization(batch)
    return loss


def test_every_ranking_model_is_registered():
    assert set(RANKING_MODELS) <= set(model_names())


@pytest.mark.parametrize("name, params", CASES)
def test_forward_gives_one_logit_per_row(world, name, params):
    feature_map, batch = world
    model = build_model(name, feature_map, params)
    logits = model(batch)
    assert logits.shape == (len(batch),)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name, params", CASES)
def test_gradients_reach_every_trainable_parameter(world, name, params):
    feature_map, batch = world
    model = build_model(name, feature_map, params)
    model.train()
    loss_of(model, batch).backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, param_name
            assert param.grad.abs().sum() > 0, param_name
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert tables, "the model embeds its ids"
    assert all(t.weight.grad is not None for t in tables if t.weight.requires_grad)


@pytest.mark.parametrize("name, params", CASES)
def test_frozen_pretrained_table_gets_no_update(world, name, params):
    feature_map, batch = world
    model = build_model(name, feature_map, params)
    frozen = [m for m in model.modules() if isinstance(m, nn.Embedding) and not m.weight.requires_grad]
    if name == "lr":
        assert frozen == []  # LR's per-id weights are fresh 1-d tables, never pretrained
        return
    assert len(frozen) == 1 and frozen[0].weight.shape[1] == DIM
    before = frozen[0].weight.detach().clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()
    assert frozen[0].weight.grad is None
    assert torch.equal(frozen[0].weight, before)


@pytest.mark.parametrize("name, params", CASES)
def test_state_dict_round_trip_gives_identical_outputs(world, name, params):
    feature_map, batch = world
    model = build_model(name, feature_map, params)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):  # move away from the initialisation, running statistics included
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)

    torch.manual_seed(123)  # a different initialisation
    fresh = build_model(name, feature_map, params)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), fresh(batch))


@pytest.mark.parametrize("name, params", CASES)
def test_sparse_embeddings_train_with_sparse_adam(world, name, params):
    feature_map, batch = world
    model = build_model(name, feature_map, {**params, "sparse_embeddings": True})
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]
    assert sparse and all(isinstance(m, nn.Embedding) and m.sparse for m in model.modules() if isinstance(m, nn.Embedding))
    dense = [p for p in model.parameters() if p.requires_grad and all(p is not s for s in sparse)]
    optimizers = [torch.optim.SparseAdam(sparse, lr=0.1)] + ([torch.optim.Adam(dense, lr=0.01)] if dense else [])
    loss_of(model, batch).backward()
    assert all(w.grad.is_sparse for w in sparse)
    before = [w.detach().clone() for w in sparse]
    for optimizer in optimizers:
        optimizer.step()
    assert all(not torch.equal(b, w) for b, w in zip(before, sparse))


@pytest.mark.parametrize("name, params", CASES)
def test_embedding_init_std_sets_the_fresh_tables_scale_and_keeps_pretrained_rows(world, name, params):
    feature_map, _ = world
    default_std = 0.0 if name == "lr" else 0.01  # LR's per-id weights start at zero
    for std in (None, 1e-4, 0.5):
        torch.manual_seed(0)
        model = build_model(name, feature_map, params if std is None else {**params, "embedding_init_std": std})
        fresh = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]
        frozen = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and not m.weight.requires_grad]
        assert fresh
        values = torch.cat([w.detach()[2:].flatten() for w in fresh])  # rows 0 (padding) and 1 (OOV) aside
        expected = default_std if std is None else std
        assert values.std().item() == pytest.approx(expected, rel=0.2, abs=1e-12)
        assert all(not w[0].any() for w in fresh)  # padding stays zero
        assert all(w.detach()[2:].abs().sum() > 0 for w in frozen)  # pretrained rows are the file's, whatever std


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_embedding_init_std_must_be_a_finite_number_at_least_zero(world, bad):
    from recstack.errors import ConfigError

    with pytest.raises(ConfigError, match="model.params.embedding_init_std: must be a finite number >= 0"):
        build_model("deepfm", world[0], {**model_params("deepfm"), "embedding_init_std": bad})


def test_models_sharing_a_table_use_one_embedding_for_candidate_and_history(world):
    feature_map, _ = world
    for name in ("din", "deepfm", "embedding_mlp", "dcn"):
        model = build_model(name, feature_map, model_params(name))
        assert model.embeddings.table("item_id") is model.embeddings.table("hist_item_ids"), name
        weights = {id(m.weight) for m in model.embeddings.modules() if isinstance(m, nn.Embedding)}
        assert len(weights) == len(feature_map.tables), name


def test_wide_deep_cross_product_has_its_own_hashed_weights(world):
    feature_map, batch = world
    model = build_model("wide_deep", feature_map, model_params("wide_deep"))
    (cross,) = model.crosses
    buckets = cross.bucket(batch)
    assert buckets.shape == (len(batch),) and buckets.min() >= 0 and buckets.max() < 97
    same_pair = (batch.ids["user_id"] == batch.ids["user_id"][0]) & (batch.ids["item_id"] == batch.ids["item_id"][0])
    assert (buckets[same_pair] == buckets[0]).all()
    model.eval()
    with torch.no_grad():
        before = model(batch)
        cross.weights.weight[buckets[0]] += 1.0  # the weight of (user_id, item_id) of row 0
        shift = model(batch) - before
    assert torch.allclose(shift, (buckets == buckets[0]).float(), atol=1e-6)
