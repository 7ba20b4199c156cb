"""SASRec and GRU4Rec: shapes and masks, causality, padding, the shared output layer, gradients,
save -> load, the exported user tower, and the sequence losses against hand computations."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Batch
from recstack.models import build_model
from recstack.models.retrieval_contract import RetrievalModel
from recstack.nn.sequence import last_position
from recstack.tasks import FullSoftmaxTask, InBatchSoftmaxTask, SampledBCETask, SampledSoftmaxTask

from .sequence_helpers import L, ROWS, sequence_batch, sequence_feature_map

MODELS = {"sasrec": {"num_layers": 2, "num_heads": 2, "dropout": 0.1}, "gru4rec": {"hidden_dim": 24, "dropout": 0.1}}


def _model(name: str, **params) -> nn.Module:
    return build_model(name, sequence_feature_map(), {**MODELS[name], **params})


@pytest.mark.parametrize("name", MODELS)
def test_pairs_at_every_real_position_and_the_user_vector_at_the_last(name: str) -> None:
    model = _model(name).eval()
    assert isinstance(model, RetrievalModel) and model.num_interests == 1
    batch = sequence_batch()
    history, targets = batch.sequences["hist_item_ids"], batch.sequences["target_item_ids"]
    pairs = model.retrieval_pairs(batch)
    real = history != 0
    assert pairs.queries.shape == (int(real.sum()), 16) and pairs.positive_vectors is None
    assert torch.equal(pairs.positive_rows, targets[real])
    every = model.user_tower().every_position(history)  # (B, L, D)
    assert torch.equal(every[~real], torch.zeros_like(every[~real]))
    assert torch.allclose(pairs.queries, every[real])
    users = model.encode_user(batch)
    assert users.shape == (5, 16) and torch.equal(users[0], torch.zeros(16))  # empty history: zeros
    assert torch.allclose(users, last_position(every, real))
    assert pairs.seen_rows.shape == (5, 2 * L)  # each row's inputs and targets, read by its pairs
    assert torch.equal(pairs.seen_of_pair, torch.arange(5).unsqueeze(1).expand(5, L)[real])
    assert model.positive_feature == "target_item_ids" and model.user_feature_names == ("hist_item_ids",)


@pytest.mark.parametrize("name", MODELS)
def test_pairs_skip_columns_that_are_padding_in_every_row(name: str) -> None:
    model = _model(name).eval()
    batch = sequence_batch()
    wide = Batch(ids=batch.ids, sequences={key: F.pad(value, (0, 4)) for key, value in batch.sequences.items()})  # (B, L + 4)
    pairs, wide_pairs = model.retrieval_pairs(batch), model.retrieval_pairs(wide)
    assert torch.allclose(wide_pairs.queries, pairs.queries, atol=1e-6)
    assert torch.equal(wide_pairs.positive_rows, pairs.positive_rows)
    assert wide_pairs.seen_rows.shape == pairs.seen_rows.shape == (5, 2 * L)  # trimmed to the longest row
    short = Batch(sequences={key: F.pad(value[:, :3], (0, L - 3)) for key, value in batch.sequences.items()})  # rows of <= 3 items
    assert model.retrieval_pairs(short).seen_rows.shape[1] == 2 * 3
    empty = Batch(sequences={key: torch.zeros_like(value[:2]) for key, value in batch.sequences.items()})
    assert model.retrieval_pairs(empty).queries.shape == (0, 16)


@pytest.mark.parametrize("name", MODELS)
def test_oov_targets_are_no_pairs(name: str) -> None:
    batch = sequence_batch()
    batch.sequences["target_item_ids"][1, 2] = 1  # OOV: unknown next item
    model = _model(name).eval()
    pairs = model.retrieval_pairs(batch)
    history = batch.sequences["hist_item_ids"]
    assert int((history != 0).sum()) - 1 == len(pairs.positive_rows)
    assert bool((pairs.positive_rows > 1).all())
    paired = (history != 0) & (batch.sequences["target_item_ids"] > 1)  # the pairs' positions
    assert torch.allclose(pairs.queries, model.user_tower().every_position(history)[paired], atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_causal_later_items_do_not_change_earlier_outputs(name: str) -> None:
    model = _model(name).eval()
    history = sequence_batch().sequences["hist_item_ids"][1:2]  # the full row, (1, L)
    changed = history.clone()
    changed[0, 3:] = torch.tensor([7, 8, 9])  # perturb positions 3.. (still real items)
    before, after = (model.user_tower().every_position(h) for h in (history, changed))
    # SASRec's recency positions depend on how many items follow, not which: same count here
    assert torch.allclose(before[0, :3], after[0, :3], atol=1e-6)
    assert not torch.allclose(before[0, 3:], after[0, 3:], atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_padding_changes_nothing(name: str) -> None:
    model = _model(name).eval()
    history = sequence_batch().sequences["hist_item_ids"]
    user = model.user_tower()
    padded = F.pad(history, (0, 3))  # three more padding slots: (B, L + 3)
    shorter = history[:, :4]  # rows of length <= 4 are the same sequence in fewer slots
    fits = (history[:, 4:] == 0).all(dim=1)
    # atol: the encoder's kernels pick other blockings for another length (~1e-7 apart on some CPUs)
    assert torch.allclose(user(padded), user(history), atol=1e-6)
    assert torch.allclose(user(shorter)[fits], user(history)[fits], atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_the_output_layer_is_the_input_item_table(name: str) -> None:
    model = _model(name)
    tables = [p for p in model.parameters() if p.shape == (ROWS, 16)]
    assert len(tables) == 1  # one parameter, read by the history and scored against
    rows = torch.arange(ROWS)
    assert torch.equal(model.encode_item_rows(rows), tables[0])
    assert model.user_tower().inputs is model.item_tower().inputs


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_encoder_and_the_table(name: str) -> None:
    model = _model(name).train()
    FullSoftmaxTask().loss(model, sequence_batch()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "bias" not in n or "gru" in n), [n for n, g in grads.items() if g is None]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_identical_outputs(name: str) -> None:
    model = _model(name).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    loaded = _model(name).eval()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    batch = sequence_batch()
    assert torch.equal(model.encode_user(batch), loaded.encode_user(batch))
    assert torch.equal(model.encode_item_rows(torch.arange(ROWS)), loaded.encode_item_rows(torch.arange(ROWS)))


@pytest.mark.parametrize("name", MODELS)
def test_exported_user_tower_equals_the_model(name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from recstack.export.onnx_towers import export_tower_onnx, onnx_max_abs_error

    model = _model(name).eval()
    tower = model.user_tower()
    batch = sequence_batch(8, seed=3)
    path = export_tower_onnx(tower, tower.inputs_from_batch(batch), tmp_path / "user.onnx")
    assert onnx_max_abs_error(tower, path, tower.inputs_from_batch(sequence_batch(3, seed=4))) < 1e-5
    item = model.item_tower()
    item_path = export_tower_onnx(item, item.inputs_from_batch(batch), tmp_path / "item.onnx")
    assert onnx_max_abs_error(item, item_path, item.inputs_from_batch(batch)) < 1e-6


def test_config_errors_name_the_parameter() -> None:
    from recstack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.params.num_heads: 3 heads do not divide the item table's dim 16"):
        _model("sasrec", num_heads=3)
    with pytest.raises(ConfigError, match=r"model.params.target_feature: 'nope' is not a sequence feature"):
        _model("gru4rec", target_feature="nope")
    with pytest.raises(ConfigError, match=r"model.params.max_len: 3 positions cannot hold"):
        _model("sasrec", max_len=3)


# ---- the sequence losses, by hand ----------------------------------------------------------------
class Fixed(nn.Module):
    """Unit-free fixed pairs: users (N, D), an item table (R, D); positives = batch.ids['item_id']."""

    def __init__(self, users: torch.Tensor, table: torch.Tensor) -> None:
        super().__init__()
        self.users, self.table = users, table
        self.num_item_rows = table.shape[0]

    def encode_item_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.table[rows]

    def forward(self, batch: Batch):
        return self.users, self.table[batch.ids["item_id"]]


G = torch.Generator().manual_seed(0)
USERS, TABLE = torch.randn(3, 4, generator=G), torch.randn(8, 4, generator=G)
POS = torch.tensor([2, 5, 7])


def test_full_softmax_is_cross_entropy_over_real_rows() -> None:
    loss = FullSoftmaxTask(temperature=0.5).loss(Fixed(USERS, TABLE), Batch(ids={"item_id": POS}))
    logits = USERS @ TABLE[2:].T / 0.5  # rows 0, 1 (padding, OOV) are never candidates
    assert loss.item() == pytest.approx(F.cross_entropy(logits, POS - 2).item(), abs=1e-5)


def test_full_softmax_in_chunks_gives_the_one_matrix_loss_and_gradients(monkeypatch) -> None:
    import recstack.tasks.full_softmax as full_softmax

    g = torch.Generator().manual_seed(1)
    users, table = torch.randn(37, 4, generator=g), torch.randn(8, 4, generator=g)
    positives = torch.randint(2, 8, (37,), generator=g)
    results = []
    for chunk_elements in (1 << 20, 8 * 5):  # one chunk; chunks of 5 pairs (the last one of 2)
        monkeypatch.setattr(full_softmax, "_CHUNK_ELEMENTS", chunk_elements)
        u, t = users.clone().requires_grad_(), table.clone().requires_grad_()
        loss = FullSoftmaxTask(temperature=0.7).loss(Fixed(u, t), Batch(ids={"item_id": positives}))
        loss.backward()
        results.append((loss.detach(), u.grad, t.grad))
    expected = F.cross_entropy(users @ table[2:].T / 0.7, positives - 2)
    for loss, user_grad, table_grad in results:
        torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2])
    assert results[1][2][:2].abs().sum() == 0  # padding and OOV rows get no gradient


def test_sampled_softmax_subtracts_log_q_of_every_candidate() -> None:
    counts = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6.0])
    task = SampledSoftmaxTask(num_negatives=4, seed=7).set_item_frequencies(counts)
    loss = task.loss(Fixed(USERS, TABLE), Batch(ids={"item_id": POS}))
    q = counts / counts.sum()
    negatives = torch.multinomial(q.double(), 4, replacement=True, generator=torch.Generator().manual_seed(7))
    logits = torch.cat([(USERS * TABLE[POS]).sum(-1, keepdim=True), USERS @ TABLE[negatives].T], dim=1)
    logits = logits - torch.log(q)[torch.cat([POS.unsqueeze(1), negatives.expand(3, -1)], dim=1)]
    logits = logits.masked_fill(torch.cat([torch.zeros(3, 1, dtype=torch.bool), negatives == POS.unsqueeze(1)], 1), -1e30)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)).item(), abs=1e-5)
    plain = SampledSoftmaxTask(num_negatives=4, seed=7, logq_correction=False).set_item_frequencies(counts)
    assert plain.loss(Fixed(USERS, TABLE), Batch(ids={"item_id": POS})).item() != pytest.approx(loss.item(), abs=1e-3)


def test_sampled_bce_redraws_only_clashes_and_flags_the_pairs_it_cannot_resolve() -> None:
    rows = 12  # item rows 2..11
    every_item = torch.arange(2, rows)  # (10,)
    seen = torch.stack([every_item, torch.cat([every_item[:5], every_item[:5]]), every_item.roll(3)])  # (3, 10)
    seen = torch.cat([seen, torch.tensor([[2] * 10])])  # a fourth pair that saw only item 2
    negatives, unresolved = SampledBCETask(num_negatives=5, seed=3).sample(seen, rows)
    # pairs 0 and 2 saw every item: nothing can be drawn for them; pair 1 has five left, pair 3 nine
    assert unresolved.tolist() == [[True] * 5, [False] * 5, [True] * 5, [False] * 5]
    assert bool((negatives[1] >= 7).all())  # items 2..6 are pair 1's sequence
    assert not bool((negatives[3] == 2).any()) and bool(((negatives >= 2) & (negatives < rows)).all())


def test_sampled_bce_draws_the_same_per_pair_or_per_row_by_table_or_by_comparison(monkeypatch) -> None:
    import recstack.tasks.sampled_bce as sampled_bce

    pairs = _model("sasrec").eval().retrieval_pairs(sequence_batch(6, seed=4))
    per_row = SampledBCETask(num_negatives=4, seed=1).sample(pairs.seen_rows, 12, pairs.seen_of_pair)  # 12 rows: many clashes
    per_pair = SampledBCETask(num_negatives=4, seed=1).sample(pairs.seen_rows[pairs.seen_of_pair], 12)
    monkeypatch.setattr(sampled_bce, "_MEMBERSHIP_TABLE_MAX", 0)  # the comparison path
    compared = SampledBCETask(num_negatives=4, seed=1).sample(pairs.seen_rows, 12, pairs.seen_of_pair)
    for other in (per_pair, compared):
        assert torch.equal(per_row[0], other[0]) and torch.equal(per_row[1], other[1])
    sequences = pairs.seen_rows[pairs.seen_of_pair].unsqueeze(1)  # (N, 1, 2L)
    in_sequence = (per_row[0].unsqueeze(-1) == sequences).any(-1)  # (N, 4)
    assert torch.equal(in_sequence, per_row[1])  # flagged exactly where no free item was found


def test_sampled_bce_is_the_papers_loss_and_never_samples_the_sequence() -> None:
    model = _model("sasrec").eval()
    batch = sequence_batch(6, seed=2)
    task = SampledBCETask(num_negatives=3, seed=0)
    pairs = model.retrieval_pairs(batch)
    negatives, unresolved = SampledBCETask(num_negatives=3, seed=0).sample(pairs.seen_rows, ROWS, pairs.seen_of_pair)
    assert negatives.shape == (len(pairs.positive_rows), 3) and not unresolved.any() and bool((negatives >= 2).all())
    sequences = pairs.seen_rows[pairs.seen_of_pair]  # (N, 2L)
    assert not (negatives.unsqueeze(-1) == sequences.unsqueeze(1)).any()  # never in the user's sequence
    loss = task.loss(model, batch)
    positive = (pairs.queries * model.encode_item_rows(pairs.positive_rows)).sum(-1)
    negative = torch.einsum("nd,nkd->nk", pairs.queries, model.encode_item_rows(negatives))
    expected = (-F.logsigmoid(positive) - torch.log1p(-torch.sigmoid(negative)).sum(-1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_in_batch_softmax_over_positions() -> None:
    model = _model("gru4rec").eval()
    batch = sequence_batch()
    logits, targets = InBatchSoftmaxTask(temperature=1.0, logq_correction=False).logits_and_targets(model, batch)
    n = int((batch.sequences["hist_item_ids"] != 0).sum())
    assert logits.shape == (n, n) and targets.tolist() == list(range(n))
    assert math.isfinite(InBatchSoftmaxTask(temperature=1.0, logq_correction=False).loss(model, batch).item())
