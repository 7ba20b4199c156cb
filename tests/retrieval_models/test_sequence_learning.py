"""SASRec and GRU4Rec learn a planted sequential pattern: Recall@10 of the next item far above
popularity's on held-out users (recstack.datasets.synthetic_sequences)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.data.batch import Batch
from recstack.datasets.sequence_split import SequenceSplitSpec, split_sequences
from recstack.datasets.synthetic_sequences import generate_sequence_events
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.models import build_model
from recstack.tasks import FullSoftmaxTask, SampledBCETask

from .sequence_helpers import sequence_feature_map

NUM_ITEMS, MAXLEN = 60, 10


def _padded(lists: pa.ChunkedArray, width: int) -> torch.Tensor:
    """Lists of item ids -> (B, width) table rows (id + 1: rows 0, 1 are padding and OOV)."""
    out = torch.zeros(len(lists), width, dtype=torch.long)
    for i, values in enumerate(lists.to_pylist()):  # test data only: a few hundred rows
        out[i, : len(values)] = torch.tensor(values, dtype=torch.long) + 1
    return out


@pytest.fixture(scope="module")
def planted():
    events, _ = generate_sequence_events(num_users=400, num_items=NUM_ITEMS, length=14, follow=0.8, seed=0)
    split = split_sequences(events, SequenceSplitSpec(max_len=MAXLEN))
    train = Batch(sequences={"hist_item_ids": _padded(split.train["hist_item_ids"], MAXLEN),
                             "target_item_ids": _padded(split.train["target_item_ids"], MAXLEN)})  # fmt: skip
    test_history = _padded(split.test["hist_item_ids"], MAXLEN)
    targets = torch.tensor(split.test["item_id"].to_numpy()) + 1  # table rows
    return train, test_history, targets


def _recall_at_10(scores: torch.Tensor, history: torch.Tensor, targets: torch.Tensor) -> float:
    """Full-corpus Recall@10 over rows 2.. with the input's items excluded."""
    catalogue = np.arange(2, NUM_ITEMS + 2)
    lengths = (history != 0).sum(1).numpy()
    indptr = np.r_[0, np.cumsum(lengths)]
    excluded = (history[history != 0] - 2).numpy()
    metrics = evaluate_ranked_scores(lambda rows: scores[int(rows[0]) : int(rows[-1]) + 1, 2:], (targets - 2).numpy(), exclude=(indptr, excluded), ks=(10,))
    assert len(catalogue) == scores.shape[1] - 2
    return float(metrics["recall@10"])


@pytest.mark.parametrize("name, params, task", [
    ("sasrec", {"num_layers": 1, "dropout": 0.1}, FullSoftmaxTask()),
    ("sasrec", {"num_layers": 1, "dropout": 0.1}, SampledBCETask(seed=0)),
    ("gru4rec", {"dropout": 0.1}, FullSoftmaxTask()),
])  # fmt: skip
def test_learns_the_planted_transitions(planted, name, params, task) -> None:
    train, history, targets = planted
    torch.manual_seed(0)
    model = build_model(name, sequence_feature_map(num_rows=NUM_ITEMS + 2, maxlen=MAXLEN, dim=32), params)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    rows = len(train)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(20 if isinstance(task, FullSoftmaxTask) else 40):  # epochs of 4 batches
        for chunk in torch.randperm(rows, generator=generator).split(100):
            optimizer.zero_grad()
            task.loss(model, train.select(chunk)).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        users = model.encode_user(Batch(sequences={"hist_item_ids": history}))  # (U, D)
        scores = users @ model.encode_item_rows(torch.arange(NUM_ITEMS + 2)).T  # (U, R)
    learned = _recall_at_10(scores, history, targets)
    counts = torch.bincount(train.sequences["target_item_ids"].reshape(-1), minlength=NUM_ITEMS + 2).float()
    popularity = _recall_at_10(counts.expand(len(targets), -1).clone(), history, targets)
    assert learned > 0.6 and learned > 2 * popularity, (learned, popularity)
