"""DIEN: GRU interest extractor with the auxiliary loss, AUGRU interest evolution."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.models import DIEN, build_model, model_class, model_names
from recstack.nn.sequence import AUGRU, GRUEncoder

from .helpers import DIM, fit, full_records, full_schema, pad_sequences, write_pretrained
from .sequence_rankers import BEHAVIOURS, ORDER_BEHAVIOURS, UNWEIGHTED, fitted_order_auc, order_data, task_loss, unweighted

PARAMS = {"behaviours": BEHAVIOURS, "hidden_dims": [16, 8], "aux_hidden_dims": [8]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


def test_registered_with_its_blocks(world):
    assert "dien" in model_names() and model_class("dien") is DIEN
    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "gru_hidden_dim": 12})
    (extractor,), (evolution,) = model.extractors, model.evolutions
    assert isinstance(extractor, GRUEncoder) and isinstance(evolution, AUGRU)
    assert extractor.hidden_dim == evolution.hidden_dim == 12
    assert model.attention_weights[0].shape == (12, 2 * DIM)  # h_t W e_target, item + genre
    model.train()
    assert model(batch).shape == (len(batch),) and model.regularization(batch).item() > 0  # H != D_g runs


@pytest.mark.parametrize("training", [True, False])
def test_forward_gives_one_finite_logit_per_row(world, training):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).train(training)
    logits = model(batch)
    assert logits.shape == (len(batch),) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()  # row 1 has an empty history


def test_aux_loss_is_added_by_the_training_task_and_never_computed_when_scoring(world):
    from recstack.tasks import BinaryClassificationTask

    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "aux_loss_weight": 0.5}).train()
    aux_calls, extractor_calls = [], []
    model.auxiliary_nets[0].register_forward_hook(lambda *_: aux_calls.append(1))
    model.extractors[0].register_forward_hook(lambda *_: extractor_calls.append(1))
    task = BinaryClassificationTask()
    torch.manual_seed(3)
    loss = task.loss(model, batch)
    assert len(extractor_calls) == 1  # regularization reused forward's extractor states
    assert len(aux_calls) == 1  # positive and negative pairs in one batch
    logits = model(batch)
    torch.manual_seed(3)
    penalty = model.regularization(batch)
    click = nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    assert penalty.item() > 0 and penalty.requires_grad
    torch.testing.assert_close(loss, click + penalty)  # the task's loss = click loss + 0.5 * aux loss
    aux_calls.clear()
    model.eval()
    with torch.no_grad():
        task.predict(model, batch)
        model(batch)
    assert aux_calls == []  # scoring never runs the auxiliary net
    off = build_model("dien", feature_map, {**PARAMS, "aux_loss_weight": 0.0}).train()
    off(batch)
    assert off.regularization(batch).item() == 0.0


def test_regularization_on_another_batch_runs_the_extractor_on_that_batch(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).train()
    first, second = batch.select(torch.arange(32)), batch.select(torch.arange(32, 64))
    model(first)
    torch.manual_seed(4)
    stale = model.regularization(second)
    model(second)
    torch.manual_seed(4)
    torch.testing.assert_close(stale, model.regularization(second))


def test_aux_loss_pairs_each_state_with_the_next_behaviour_and_a_sampled_negative(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).train()
    (extractor,), (net,) = model.extractors, model.auxiliary_nets
    mask = batch.mask("hist_item_ids")
    items = model.embeddings.sequence(batch, "hist_item_ids")  # (B, L, D) the lead feature
    history = torch.cat([items, model.embeddings.sequence(batch, "hist_genres")], -1)
    states = extractor(history, mask)
    torch.manual_seed(5)
    loss = model.auxiliary_loss(0, states, items, mask)
    # by hand: pairs (b, t) with t + 1 real, the same negatives drawn
    pairs = mask[:, 1:] & mask[:, :-1]
    torch.manual_seed(5)
    sampled = torch.randint(1, model.negative_rows[0], (int(pairs.sum()),))
    assert sampled.min() >= 1  # padding is never a negative
    table = model.embeddings.table("hist_item_ids").weight
    hidden = states[:, :-1][pairs]
    positive = net(torch.cat([hidden, items[:, 1:][pairs]], -1)).squeeze(-1)
    negative = net(torch.cat([hidden, table[sampled]], -1)).squeeze(-1)
    expected = -(nn.functional.logsigmoid(positive).mean() + nn.functional.logsigmoid(-negative).mean())
    torch.testing.assert_close(loss, expected)
    assert pairs.sum() == (mask.sum(1) - 1).clamp(min=0).sum()  # padding never pairs
    # the sampler draws every row but padding, uniformly
    draws = torch.randint(1, model.negative_rows[0], (20000,))
    counts = torch.bincount(draws, minlength=model.negative_rows[0])
    assert counts[0] == 0 and counts[1:].min() > 0


def test_aux_net_in_chunks_gives_the_one_batch_loss_and_gradients(world, monkeypatch):
    import recstack.models.dien as dien

    feature_map, batch = world
    torch.manual_seed(0)
    model = build_model("dien", feature_map, PARAMS).train()
    results = []
    for elements in (1 << 30, 100):  # one chunk; chunks of a few pairs (100 // (2 x the widest layer))
        monkeypatch.setattr(dien, "_CHUNK_ELEMENTS", elements)
        model.zero_grad()
        torch.manual_seed(5)
        model(batch)
        torch.manual_seed(5)
        loss = model.regularization(batch)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (one, one_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, one)
    assert one_grads.keys() == chunked_grads.keys() and any("auxiliary_nets" in name for name in one_grads)
    for name in one_grads:
        torch.testing.assert_close(chunked_grads[name], one_grads[name], msg=name)


def test_inner_product_scorer_pairs_each_state_with_the_next_behaviour_and_a_negative(world):
    feature_map, batch = world
    item_dim = feature_map.table_of(feature_map.schema["hist_item_ids"]).dim
    params = {**PARAMS, "aux_scorer": "inner_product", "gru_hidden_dim": item_dim}
    model = build_model("dien", feature_map, params).train()
    assert len(model.auxiliary_nets) == 0  # no net: eq. 3's inner product
    mask = batch.mask("hist_item_ids")
    items = model.embeddings.sequence(batch, "hist_item_ids")
    history = torch.cat([items, model.embeddings.sequence(batch, "hist_genres")], -1)
    states = model.extractors[0](history, mask)  # (B, L, item_dim)
    torch.manual_seed(6)
    loss = model.auxiliary_loss(0, states, items, mask)
    pairs = mask[:, 1:] & mask[:, :-1]
    torch.manual_seed(6)
    sampled = torch.randint(1, model.negative_rows[0], (int(pairs.sum()),))
    hidden = states[:, :-1][pairs]
    positive = (hidden * items[:, 1:][pairs]).sum(-1)
    negative = (hidden * model.embeddings.table("hist_item_ids").weight[sampled]).sum(-1)
    expected = -(nn.functional.logsigmoid(positive).mean() + nn.functional.logsigmoid(-negative).mean())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.extractors[0].gru.weight_hh_l0.grad.abs().sum() > 0


def test_behaviour_negatives_are_real_behaviours_of_the_batch_compared_on_the_whole_group(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "aux_negatives": "behaviours"}).train()
    (extractor,), (net,) = model.extractors, model.auxiliary_nets
    mask = batch.mask("hist_item_ids")
    history = torch.cat([model.embeddings.sequence(batch, name) for name in ("hist_item_ids", "hist_genres")], -1)  # (B, L, D_g)
    assert net.layers[0].linear.in_features == extractor.hidden_dim + history.shape[-1]  # [h_t, item and genre of e_{t+1}]
    extraction = model.extract(batch)[0]
    torch.testing.assert_close(extraction.behaviours, history)
    states = extractor(history, mask)
    torch.manual_seed(7)
    loss = model.auxiliary_loss(0, states, history, mask)
    pairs = mask[:, 1:] & mask[:, :-1]
    real = mask.flatten().nonzero().squeeze(1)
    torch.manual_seed(7)
    drawn = real[torch.randint(real.shape[0], (int(pairs.sum()),))]
    assert bool(mask.flatten()[drawn].all())  # never a padded slot
    hidden = states[:, :-1][pairs]
    positive = net(torch.cat([hidden, history[:, 1:][pairs]], -1)).squeeze(-1)
    negative = net(torch.cat([hidden, history.flatten(0, 1)[drawn]], -1)).squeeze(-1)
    expected = -(nn.functional.logsigmoid(positive).mean() + nn.functional.logsigmoid(-negative).mean())
    torch.testing.assert_close(loss, expected)


def test_inner_product_with_behaviours_of_the_batch_compares_the_whole_group(world):
    # configs/ml100k_dien.yaml's layout: h_t . e_{t+1} against a real behaviour of the batch, on
    # the group's whole embedding (item and genre); the default state is as wide as the group
    feature_map, batch = world
    params = {**PARAMS, "aux_scorer": "inner_product", "aux_negatives": "behaviours"}
    model = build_model("dien", feature_map, params).train()
    assert len(model.auxiliary_nets) == 0
    mask = batch.mask("hist_item_ids")
    history = torch.cat([model.embeddings.sequence(batch, name) for name in ("hist_item_ids", "hist_genres")], -1)
    states = model.extractors[0](history, mask)
    assert states.shape[-1] == history.shape[-1] == 2 * DIM
    torch.manual_seed(8)
    loss = model.auxiliary_loss(0, states, history, mask)
    pairs = mask[:, 1:] & mask[:, :-1]
    real = mask.flatten().nonzero().squeeze(1)
    torch.manual_seed(8)
    drawn = real[torch.randint(real.shape[0], (int(pairs.sum()),))]
    hidden = states[:, :-1][pairs]
    positive = (hidden * history[:, 1:][pairs]).sum(-1)
    negative = (hidden * history.flatten(0, 1)[drawn]).sum(-1)
    expected = -(nn.functional.logsigmoid(positive).mean() + nn.functional.logsigmoid(-negative).mean())
    torch.testing.assert_close(loss, expected)
    model(batch)
    model.regularization(batch).backward()
    assert model.extractors[0].gru.weight_hh_l0.grad.abs().sum() > 0  # the aux loss trains the extractor
    assert model.embeddings.table("hist_genres").weight.grad.abs().sum() > 0  # and the genres, compared too
    with pytest.raises(ConfigError, match=r"inner_product needs the GRU state as wide as 'hist_item_ids''s group embedding \(16\), got 12"):
        build_model("dien", feature_map, {**params, "gru_hidden_dim": 12})


def test_inner_product_scorer_needs_states_as_wide_as_the_lead_embedding(world):
    feature_map, _ = world
    # one group of item + genre: H defaults to both widths, the item embedding is one of them
    with pytest.raises(ConfigError, match=r"model\.params\.aux_scorer: inner_product needs the GRU state as wide as 'hist_item_ids'"):
        build_model("dien", feature_map, {**PARAMS, "aux_scorer": "inner_product"})


def test_augru_is_driven_by_attention_to_the_target(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).eval()
    captured = {}
    hook = model.evolutions[0].register_forward_hook(lambda m, args, out: captured.update(attention=args[1], mask=args[2]))
    with torch.no_grad():
        model(batch)
    hook.remove()
    attention, mask = captured["attention"], captured["mask"]
    assert (attention[~mask] == 0).all()
    sums = attention.sum(1)
    torch.testing.assert_close(sums[mask.any(1)], torch.ones(int(mask.any(1).sum())))  # softmax over real positions
    assert sums[~mask.any(1)].eq(0).all()  # an empty history: no attention, no NaN
    # another target, another attention
    changed = pad_sequences(batch, 0)
    changed.ids["item_id"] = changed.ids["item_id"].roll(1)
    with torch.no_grad():
        assert not torch.allclose(model(changed), model(batch))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_never_matters(world, mode):
    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "aux_loss_weight": 0.0}).train(mode == "train")
    with torch.no_grad():
        expected = model(batch)
        torch.testing.assert_close(model(pad_sequences(batch, 5)), expected)
        for feature in ("hist_item_ids", "hist_genres"):
            model.embeddings.table(feature).weight[0] = torch.randn(DIM) * 100
        torch.testing.assert_close(model(batch), expected)


def test_gradients_reach_every_trainable_parameter_through_the_task(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).train()
    task_loss(model, batch).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert any("auxiliary_nets" in n for n, _ in model.named_parameters())
    frozen = [m for m in model.modules() if isinstance(m, nn.Embedding) and not m.weight.requires_grad]
    assert len(frozen) == 1 and frozen[0].weight.grad is None


def test_the_aux_loss_reaches_the_extractor_without_the_click_loss(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS).train()
    model(batch)
    model.regularization(batch).backward()
    assert model.extractors[0].gru.weight_hh_l0.grad.abs().sum() > 0
    assert model.auxiliary_nets[0].head.weight.grad.abs().sum() > 0
    assert model.evolutions[0].hidden_gates.weight.grad is None  # the AUGRU is not on this path


def test_state_dict_round_trip_gives_identical_outputs(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, PARAMS)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        task_loss(model, batch).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = build_model("dien", feature_map, PARAMS)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), fresh(batch))


def test_sparse_embeddings_train_with_sparse_adam(world):
    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "sparse_embeddings": True})
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad]
    assert sparse
    task_loss(model, batch).backward()
    assert all(w.grad.is_sparse for w in sparse)


def test_onnx_export_equals_torch(world):
    pytest.importorskip("onnxruntime")
    from recstack.serving.ranker_scorer import RankerScorer
    from recstack.tasks import BinaryClassificationTask

    feature_map, batch = world
    model = build_model("dien", feature_map, {**PARAMS, "features": UNWEIGHTED}).eval()
    example, other = unweighted(batch.select(torch.arange(40))), unweighted(batch.select(torch.arange(40, 64)))
    scorer = RankerScorer(model=model, task=BinaryClassificationTask(), example=example)
    assert scorer.backend == "onnxruntime", scorer.failure
    with torch.no_grad():
        expected = torch.sigmoid(model(other)).numpy()
    assert abs(scorer(other) - expected).max() < 1e-5


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, r"model\.params\.behaviours: DIEN needs at least one"),
        ({"behaviours": BEHAVIOURS, "aux_loss_weight": -1}, r"model\.params\.aux_loss_weight: must be >= 0"),
        ({"behaviours": BEHAVIOURS, "gru_hidden_dim": 0}, r"model\.params\.gru_hidden_dim: must be >= 1"),
        ({"behaviours": BEHAVIOURS, "aux_hidden_dims": []}, r"model\.params\.aux_hidden_dims: needs at least one"),
        ({"behaviours": [{"candidate": "item_id", "history": "genre"}]}, r"behaviours\[0\]\.history: 'genre' is categorical"),
    ],
)
def test_bad_params_are_config_errors_naming_the_key(world, params, message):
    feature_map, _ = world
    with pytest.raises(ConfigError, match=message):
        build_model("dien", feature_map, params)


@pytest.fixture(scope="module")
def planted():
    return order_data()


@pytest.mark.slow
def test_learns_which_behaviour_is_newest(planted):
    """The label is "the candidate's category is the newest behaviour's": DIN, blind to order,
    cannot see it; DIEN's GRUs read the order."""
    feature_map, _, _ = planted
    params = {"behaviours": ORDER_BEHAVIOURS, "hidden_dims": [32, 16]}
    dien_auc = fitted_order_auc(build_model("dien", feature_map, params), planted, epochs=15, lr=0.005)
    torch.manual_seed(0)
    din_auc = fitted_order_auc(build_model("din", feature_map, params), planted, epochs=15, lr=0.005)
    print(f"dien: AUC {dien_auc:.3f} (order-blind DIN {din_auc:.3f})")
    assert dien_auc > 0.68  # planted: about 0.74
    assert dien_auc > din_auc + 0.12  # DIN: about 0.53
