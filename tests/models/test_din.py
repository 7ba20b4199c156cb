"""DIN: padding never matters, joint attention over aligned histories, mini-batch-aware L2."""

from __future__ import annotations

import pytest
import torch

from recstack.data.feature_map import table_name
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.schema import is_embedded

from .helpers import DIM, fit, full_records, full_schema, model_params, pad_sequences, write_pretrained


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


@pytest.fixture(params=[False, True], ids=["raw-scores", "softmax"])
def trained_din(world, request):
    """A DIN after a few steps, so Dice and the attention are no longer at their init."""
    feature_map, batch = world
    model = build_model("din", feature_map, model_params("din", attention_softmax=request.param))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_output_is_unchanged_by_extra_padding(world, trained_din, mode):
    _, batch = world
    trained_din.train(mode == "train")
    with torch.no_grad():
        expected = trained_din(batch)
        assert torch.allclose(trained_din(pad_sequences(batch, 7)), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_output_is_unchanged_by_what_padded_positions_hold(world, trained_din, mode):
    _, batch = world
    trained_din.train(mode == "train")
    with torch.no_grad():
        expected = trained_din(batch)
        for feature in ("hist_item_ids", "hist_genres"):
            trained_din.embeddings.table(feature).weight[0] = torch.randn(DIM) * 100  # the padding row
        assert torch.allclose(trained_din(batch), expected, atol=1e-5)


def test_aligned_histories_are_attended_jointly(world):
    feature_map, batch = world
    joint = build_model("din", feature_map, model_params("din"))
    assert len(joint.attentions) == 1
    assert joint.attentions[0].unit.mlp.layers[0].linear.in_features == 4 * 2 * DIM  # [q, k, q-k, q*k] of item+genre
    separate = build_model(
        "din",
        feature_map,
        model_params(
            "din",
            behaviours=[
                {"candidate": "item_id", "history": "hist_item_ids", "group": "items"},
                {"candidate": "genre", "history": "hist_genres", "group": "genres"},
            ],
        ),
    )
    assert len(separate.attentions) == 2
    assert [i.shape for i in separate.interests(batch)] == [(64, DIM), (64, DIM)]
    assert separate(batch).shape == (64,)


def test_a_group_needs_histories_of_one_maxlen(tmp_path):
    path, _ = write_pretrained(tmp_path)
    schema = full_schema(path).to_dict()
    next(f for f in schema["features"] if f["name"] == "hist_genres")["maxlen"] = 3
    from recstack.schema import Schema

    feature_map = fit(Schema.from_dict(schema), full_records(32)).feature_map()
    with pytest.raises(ConfigError, match=r"model\.params\.behaviours: group 'behaviour' joins histories of different maxlen"):
        build_model("din", feature_map, model_params("din"))


def test_other_features_feed_the_mlp_and_histories_do_not(world):
    feature_map, _ = world
    model = build_model("din", feature_map, model_params("din"))
    assert "item_id" in model.other_inputs and "tags" in model.other_inputs
    assert "hist_item_ids" not in model.other_inputs and "hist_genres" not in model.other_inputs


def test_regularization_is_mini_batch_aware_l2(world):
    feature_map, batch = world
    model = build_model("din", feature_map, model_params("din", l2_reg=0.5))
    penalty = model.regularization(batch)
    expected = torch.zeros(())
    embedded = [n for n in model.embeddings.feature_names if is_embedded(model.embeddings.feature(n))]
    tables = {table_name(model.embeddings.feature(n)): model.embeddings.table(n) for n in embedded}
    for name, (rows, counts) in model.embeddings.present_rows(batch).items():
        weight = tables[name].weight
        if weight.requires_grad:
            expected = expected + (weight[rows].pow(2).sum(-1) / counts).sum()
    assert torch.allclose(penalty, 0.5 * expected)
    penalty.backward()
    item_table = model.embeddings.table("item_id").weight
    rows, _ = model.embeddings.present_rows(batch)["item"]
    absent = torch.ones(item_table.shape[0], dtype=torch.bool)
    absent[rows] = False
    assert item_table.grad[rows].abs().sum() > 0
    assert torch.equal(item_table.grad[absent], torch.zeros_like(item_table.grad[absent]))
    assert model.embeddings.table("item_pre").weight.grad is None  # frozen: not regularised


def test_regularization_is_zero_without_l2_reg(world):
    feature_map, batch = world
    model = build_model("din", feature_map, model_params("din"))
    assert model.regularization(batch).item() == 0.0


def test_padding_the_packed_history_changes_no_training_output_or_gradient(world, monkeypatch):
    """Under CPU autocast DIN rounds its packed history size up (oneDNN kernel reuse): the
    same logits, gradients and Dice statistics as without."""
    import copy

    import recstack.nn.attention as attention_module

    feature_map, batch = world
    torch.manual_seed(0)
    original = build_model("din", feature_map, model_params("din")).train()
    results = []
    for multiple in (1, 64):
        monkeypatch.setattr(attention_module, "packing_multiple", lambda device, m=multiple: m)
        model = copy.deepcopy(original)
        logits = model(batch)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label).backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                        {n: b.clone() for n, b in model.named_buffers()}))
    (logits, grads, buffers), (logits_p, grads_p, buffers_p) = results
    torch.testing.assert_close(logits_p, logits)
    assert grads.keys() == grads_p.keys() and any("attentions" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_p[name], grads[name], msg=name)
    for name in buffers:
        torch.testing.assert_close(buffers_p[name], buffers[name], msg=name)
