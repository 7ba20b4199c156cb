"""Retrieval tasks: each refinement of the in-batch softmax, checked against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Batch
from recstack.tasks.retrieval import (
    InBatchSoftmaxTask,
    NegativeSamplingTask,
    PointwiseTask,
    apply_logq_correction,
    apply_temperature,
    count_item_rows,
    mask_accidental_hits,
)


class FixedTowers(nn.Module):
    """A stand-in two-tower model returning given (already unit-norm) vectors."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        super().__init__()
        self.users, self.items = users, items

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.items


# Three rows; rows 0 and 2 hold the same item (table row 5): an accidental hit.
USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # (B=3, D=2)
ITEMS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])  # (B, D)
ITEM_ROWS = torch.tensor([5, 7, 5])
# item table of 8 rows; row 5 seen 3 times, every other row once: total 10
COUNTS = torch.tensor([1, 1, 1, 1, 1, 3, 1, 1])


def _batch(label=None) -> Batch:
    return Batch(ids={"item_id": ITEM_ROWS}, label=label)


def test_apply_temperature_divides_cosines() -> None:
    cosines = torch.tensor([[1.0, 0.6], [0.0, 0.8]])
    assert torch.allclose(apply_temperature(cosines, temperature=0.5), torch.tensor([[2.0, 1.2], [0.0, 1.6]]))


def test_apply_logq_correction_subtracts_log_probability_per_column() -> None:
    logits = torch.tensor([[2.0, 1.2], [0.0, 1.6]])
    log_q = torch.log(torch.tensor([0.3, 0.1]))
    expected = torch.tensor([[2.0 - math.log(0.3), 1.2 - math.log(0.1)], [0.0 - math.log(0.3), 1.6 - math.log(0.1)]])
    assert torch.allclose(apply_logq_correction(logits, item_log_probs=log_q), expected)


def test_mask_accidental_hits_masks_same_item_off_the_diagonal_only() -> None:
    masked = mask_accidental_hits(torch.ones(3, 3), query_item_rows=ITEM_ROWS, candidate_item_rows=ITEM_ROWS)
    is_masked = masked < -1e30
    assert is_masked.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    assert torch.all(masked.diagonal() == 1.0)


def test_in_batch_softmax_equals_hand_computed_example() -> None:
    task = InBatchSoftmaxTask(temperature=0.5).set_item_frequencies(COUNTS)
    # cosines U I^T = [[1, .6, 1], [0, .8, 0], [.6, 1, .6]]; / 0.5 = [[2, 1.2, 2], [0, 1.6, 0], [1.2, 2, 1.2]]
    # log-Q: column of item 5 minus log(3/10), of item 7 minus log(1/10); then mask (0, 2) and (2, 0)
    a, b = -math.log(0.3), -math.log(0.1)
    expected_logits = [
        [2 + a, 1.2 + b, None],
        [0 + a, 1.6 + b, 0 + a],
        [None, 2 + b, 1.2 + a],
    ]
    logits = task.logits(FixedTowers(USERS, ITEMS), _batch())
    for i, row in enumerate(expected_logits):
        for j, value in enumerate(row):
            if value is None:
                assert logits[i, j] < -1e30
            else:
                assert logits[i, j].item() == pytest.approx(value, abs=1e-5)

    def row_loss(row: list, target: int) -> float:
        return -row[target] + math.log(sum(math.exp(v) for v in row if v is not None))

    per_row = [row_loss(row, i) for i, row in enumerate(expected_logits)]
    loss = task.loss(FixedTowers(USERS, ITEMS), _batch())
    assert loss.item() == pytest.approx(sum(per_row) / 3, abs=1e-5)

    # labels weight the rows: a 0-labelled row is no query (its item stays a candidate)
    weighted = task.loss(FixedTowers(USERS, ITEMS), _batch(label=torch.tensor([1.0, 0.0, 1.0])))
    assert weighted.item() == pytest.approx((per_row[0] + per_row[2]) / 2, abs=1e-5)


def test_refinements_can_be_turned_off() -> None:
    task = InBatchSoftmaxTask(temperature=0.5, logq_correction=False, remove_accidental_hits=False)
    logits = task.logits(FixedTowers(USERS, ITEMS), Batch(dense={"x": torch.zeros(3, 1)}))  # no item_id needed
    assert torch.allclose(logits, USERS @ ITEMS.T / 0.5)


def test_logq_without_frequencies_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="set_item_frequencies"):
        InBatchSoftmaxTask().loss(FixedTowers(USERS, ITEMS), _batch())


def test_temperature_changes_logits_and_loss() -> None:
    model = FixedTowers(USERS, ITEMS)
    cold = InBatchSoftmaxTask(temperature=0.05, logq_correction=False, remove_accidental_hits=False)
    warm = InBatchSoftmaxTask(temperature=1.0, logq_correction=False, remove_accidental_hits=False)
    assert torch.allclose(cold.logits(model, _batch()), 20 * warm.logits(model, _batch()))
    assert cold.loss(model, _batch()).item() != pytest.approx(warm.loss(model, _batch()).item(), abs=1e-3)
    assert torch.allclose(cold.predict(model, _batch()), (USERS * ITEMS).sum(-1) / 0.05)


def test_count_item_rows_counts_one_pass() -> None:
    batches = [_batch(), Batch(ids={"item_id": torch.tensor([7, 2])})]
    assert count_item_rows(batches, num_rows=8).tolist() == [0, 0, 1, 0, 0, 2, 0, 2]


def test_pointwise_equals_bce_with_logits_and_pos_weight() -> None:
    labels = torch.tensor([1.0, 0.0, 1.0])
    loss = PointwiseTask(gamma=10.0, pos_weight=1.2).loss(FixedTowers(USERS, ITEMS), _batch(label=labels))
    cosine = (USERS * ITEMS).sum(-1)
    expected = F.binary_cross_entropy_with_logits(10.0 * cosine, labels, pos_weight=torch.tensor(1.2))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    probs = PointwiseTask(gamma=10.0).predict(FixedTowers(USERS, ITEMS), _batch())
    assert torch.allclose(probs, torch.sigmoid(10.0 * cosine))


class IdTowers(nn.Module):
    """Two towers over ids only: what NegativeSamplingTask can sample from."""

    def __init__(self, num_item_rows: int) -> None:
        super().__init__()
        self.num_item_rows = num_item_rows
        self.user = nn.Embedding(10, 4)
        self.item = nn.Embedding(num_item_rows, 4)

    def encode_item_rows(self, item_rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item(item_rows), dim=-1)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.user(batch.ids["user_id"]), dim=-1), self.encode_item_rows(batch.ids["item_id"])


def test_negative_sampling_masks_negatives_equal_to_the_positive() -> None:
    # a catalogue of one real item (row 2): every negative is the positive itself, all masked
    batch = Batch(ids={"user_id": torch.tensor([0, 1]), "item_id": torch.tensor([2, 2])})
    loss = NegativeSamplingTask(num_negatives=5, temperature=0.1, seed=0).loss(IdTowers(3), batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_negative_sampling_trains_and_samples_by_popularity() -> None:
    model = IdTowers(20)
    batch = Batch(ids={"user_id": torch.arange(4), "item_id": torch.tensor([2, 3, 4, 5])})
    task = NegativeSamplingTask(num_negatives=8, temperature=0.1, seed=0)
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item.weight.grad.abs().sum() > 0

    counts = torch.zeros(20, dtype=torch.long)
    counts[[6, 9]] = torch.tensor([100, 1])
    popular = NegativeSamplingTask(num_negatives=50, distribution="popularity", seed=0).set_item_frequencies(counts)
    sampled = popular.sample(8, 20)
    assert sampled.shape == (8, 50)
    assert set(sampled.unique().tolist()) <= {6, 9}
    assert (sampled == 6).float().mean() > 0.9  # 100 ** 0.75 : 1


def test_popularity_sampling_needs_frequencies() -> None:
    with pytest.raises(ValueError, match="set_item_frequencies"):
        NegativeSamplingTask(distribution="popularity").sample(2, 10)


def test_in_batch_softmax_in_chunks_gives_the_one_matrix_loss_and_gradients(monkeypatch) -> None:
    import recstack.tasks.in_batch_softmax as in_batch

    g = torch.Generator().manual_seed(2)
    users, items = F.normalize(torch.randn(23, 4, generator=g), dim=-1), F.normalize(torch.randn(23, 4, generator=g), dim=-1)
    rows = torch.randint(0, 8, (23,), generator=g)  # 23 rows over 8 items: many accidental hits
    label = (torch.arange(23) % 5 != 0).float()  # every fifth row dropped as a query
    results = []
    for chunk_elements in (1 << 20, 23 * 4):  # one chunk; chunks of 4 rows (the last one of 3)
        monkeypatch.setattr(in_batch, "_CHUNK_ELEMENTS", chunk_elements)
        u, i = users.clone().requires_grad_(), items.clone().requires_grad_()
        task = InBatchSoftmaxTask(temperature=0.2).set_item_frequencies(COUNTS)
        loss = task.loss(FixedTowers(u, i), Batch(ids={"item_id": rows}, label=label))
        loss.backward()
        results.append((loss.detach(), u.grad, i.grad))
    task = InBatchSoftmaxTask(temperature=0.2).set_item_frequencies(COUNTS)
    logits = task.logits(FixedTowers(users, items), Batch(ids={"item_id": rows}))  # the whole (N, N) matrix
    expected = (F.cross_entropy(logits, torch.arange(23), reduction="none") * label).sum() / label.sum()
    for loss, _, _ in results:
        torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2])
