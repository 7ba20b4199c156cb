"""BST: target appended to the behaviour sequence, bidirectional attention, positions by recency."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.models import BST, build_model, model_class, model_names
from recstack.models.bst import _newest_first
from recstack.nn.sequence import CausalSelfAttentionEncoder

from .helpers import DIM, MAXLEN, fit, full_records, full_schema, pad_sequences, write_pretrained
from .sequence_rankers import BEHAVIOURS, ORDER_BEHAVIOURS, UNWEIGHTED, fitted_order_auc, order_data, task_loss, unweighted

PARAMS = {"behaviours": BEHAVIOURS, "hidden_dims": [16, 8], "num_heads": 2}
VARIANTS = [
    pytest.param(PARAMS, id="concat"),
    pytest.param({**PARAMS, "output": "mean", "pre_norm": True, "num_layers": 2}, id="mean-prenorm-2layers"),
    pytest.param({**PARAMS, "output": "target", "positional": False}, id="target-nopositions"),
    pytest.param({**PARAMS, "attention_dropout": 0.0}, id="no-attention-dropout"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


def test_registered():
    assert "bst" in model_names() and model_class("bst") is BST


@pytest.mark.parametrize("params", VARIANTS)
def test_forward_gives_one_finite_logit_per_row(world, params):
    feature_map, batch = world
    model = build_model("bst", feature_map, params)
    for mode in (True, False):
        logits = model.train(mode)(batch)
        assert logits.shape == (len(batch),) and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()  # row 1 has an empty history


def test_target_is_appended_newest_first_and_attention_is_bidirectional(world):
    feature_map, batch = world
    model = build_model("bst", feature_map, PARAMS)
    (group,) = model.groups
    tokens, mask = model.tokens(batch, group, model.slots[0])
    assert tokens.shape == (len(batch), MAXLEN + 1, 2 * DIM)  # item + genre per position
    target = torch.cat([model.embeddings.pooled(batch, "item_id"), model.embeddings.pooled(batch, "genre")], -1)
    torch.testing.assert_close(tokens[:, 0], target)  # slot 0: the target (time gap 0)
    history = torch.cat([model.embeddings.sequence(batch, "hist_item_ids"), model.embeddings.sequence(batch, "hist_genres")], -1)
    lengths = batch.mask("hist_item_ids").sum(1)
    row = int(torch.nonzero(lengths == 3)[0])
    torch.testing.assert_close(tokens[row, 1:4], history[row, [2, 1, 0]])  # then newest to oldest
    assert mask[row].tolist() == [True] * 4 + [False] * (MAXLEN - 3)
    assert mask[:, 0].all()  # the target is always real, even with an empty history
    (encoder,) = model.encoders
    assert isinstance(encoder, CausalSelfAttentionEncoder) and not encoder.causal
    assert encoder.positions.num_embeddings == MAXLEN + 1
    assert model.mlp.layers[0].linear.in_features == model.embeddings.output_dim(model.other_inputs) + (MAXLEN + 1) * 2 * DIM


def test_newest_first_reverses_real_positions_only():
    history = torch.arange(1.0, 7.0).view(2, 3, 1)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    reversed_history, reversed_mask = _newest_first(history, mask)
    assert reversed_history[0, :2, 0].tolist() == [2.0, 1.0]
    assert reversed_history[1, :, 0].tolist() == [6.0, 5.0, 4.0]
    assert reversed_mask.equal(mask)


def test_the_target_reads_the_behaviours_in_both_directions(world):
    feature_map, batch = world
    model = build_model("bst", feature_map, PARAMS).eval()
    (group,), (encoder,) = model.groups, model.encoders
    tokens, mask = model.tokens(batch, group, model.slots[0])
    with torch.no_grad():
        encoded = encoder(tokens, mask)
        changed = tokens.clone()
        changed[0, 3] = torch.randn(2 * DIM)  # an older behaviour of the full row 0
        assert not torch.allclose(encoder(changed, mask)[0, 0], encoded[0, 0])  # the target slot changes


@pytest.mark.parametrize("num_layers", [1, 2])
def test_target_output_is_the_full_encodings_target_slot(world, num_layers):
    feature_map, batch = world
    model = build_model("bst", feature_map, {**PARAMS, "output": "target", "num_layers": num_layers}).eval()
    (group,), (encoder,) = model.groups, model.encoders
    tokens, mask = model.tokens(batch, group, model.slots[0])
    with torch.no_grad():  # the last block attends from the target slot alone: the same values
        torch.testing.assert_close(model.sequence_outputs(batch)[0], encoder(tokens, mask)[:, 0])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_never_matters(world, mode):
    feature_map, batch = world
    model = build_model("bst", feature_map, {**PARAMS, "transformer_dropout": 0.0}).train(mode == "train")
    with torch.no_grad():
        expected = model(batch)
        torch.testing.assert_close(model(pad_sequences(batch, 5)), expected)  # extra padding
        for feature in ("hist_item_ids", "hist_genres"):
            model.embeddings.table(feature).weight[0] = torch.randn(DIM) * 100  # what padding holds
        torch.testing.assert_close(model(batch), expected)


@pytest.mark.parametrize("params", VARIANTS)
def test_gradients_reach_every_trainable_parameter(world, params):
    feature_map, batch = world
    model = build_model("bst", feature_map, params).train()
    task_loss(model, batch).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    frozen = [m for m in model.modules() if isinstance(m, nn.Embedding) and not m.weight.requires_grad]
    assert len(frozen) == 1 and frozen[0].weight.grad is None  # the pretrained table stays frozen


def test_state_dict_round_trip_gives_identical_outputs(world):
    feature_map, batch = world
    model = build_model("bst", feature_map, PARAMS)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        task_loss(model, batch).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = build_model("bst", feature_map, PARAMS)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), fresh(batch))


def test_sparse_embeddings_train_with_sparse_adam(world):
    feature_map, batch = world
    model = build_model("bst", feature_map, {**PARAMS, "sparse_embeddings": True})
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad]
    assert sparse
    task_loss(model, batch).backward()
    assert all(w.grad.is_sparse for w in sparse)


@pytest.mark.parametrize("output", ["concat", "target"])
def test_onnx_export_equals_torch(world, output):
    pytest.importorskip("onnxruntime")
    from recstack.serving.ranker_scorer import RankerScorer
    from recstack.tasks import BinaryClassificationTask

    feature_map, batch = world
    model = build_model("bst", feature_map, {**PARAMS, "features": UNWEIGHTED, "output": output}).eval()
    example, other = unweighted(batch.select(torch.arange(40))), unweighted(batch.select(torch.arange(40, 64)))
    scorer = RankerScorer(model=model, task=BinaryClassificationTask(), example=example)
    assert scorer.backend == "onnxruntime", scorer.failure
    with torch.no_grad():
        expected = torch.sigmoid(model(other)).numpy()
    assert abs(scorer(other) - expected).max() < 1e-5


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, r"model\.params\.behaviours: BST needs at least one"),
        ({"behaviours": BEHAVIOURS, "num_heads": 3}, r"model\.params\.num_heads: 3 heads do not divide a behaviour group's width 16"),
        ({"behaviours": [{"candidate": "item_id", "history": "genre"}]}, r"behaviours\[0\]\.history: 'genre' is categorical"),
        ({"behaviours": BEHAVIOURS, "transformer_dropout": 1.0}, r"model\.params\.transformer_dropout: must be in \[0, 1\)"),
        ({"behaviours": BEHAVIOURS, "output": "flat"}, r"model\.params\.output"),
        ({"behaviours": BEHAVIOURS, "attention_dropout": -0.1}, r"model\.params\.attention_dropout: must be in \[0, 1\)"),
    ],
)
def test_bad_params_are_config_errors_naming_the_key(world, params, message):
    feature_map, _ = world
    with pytest.raises(ConfigError, match=message):
        build_model("bst", feature_map, params)


@pytest.fixture(scope="module")
def planted():
    return order_data()


@pytest.mark.slow
def test_learns_which_behaviour_is_newest(planted):
    """The label is "the candidate's category is the newest behaviour's": DIN, blind to order,
    cannot see it; BST reads it from the positions."""
    feature_map, _, _ = planted
    params = {"behaviours": ORDER_BEHAVIOURS, "hidden_dims": [32, 16]}
    bst_auc = fitted_order_auc(build_model("bst", feature_map, {**params, "transformer_dropout": 0.0}), planted, epochs=15, lr=0.005)
    torch.manual_seed(0)
    din_auc = fitted_order_auc(build_model("din", feature_map, params), planted, epochs=15, lr=0.005)
    print(f"bst: AUC {bst_auc:.3f} (order-blind DIN {din_auc:.3f})")
    assert bst_auc > 0.85  # planted: about 0.93
    assert bst_auc > din_auc + 0.2  # DIN: about 0.53
