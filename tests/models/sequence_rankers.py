"""Shared checks of the sequence rankers (BST, DIEN): planted order-dependent data, the loss a
task computes, and a small training loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from recstack.schema import Schema

from .helpers import evaluate_auc, fit

BEHAVIOURS = [
    {"candidate": "item_id", "history": "hist_item_ids"},
    {"candidate": "genre", "history": "hist_genres"},
]

# every feature of helpers.full_schema but the weighted sequence "tags" (the ONNX checks of a
# weighted sequence are tests/models/test_ranker_onnx_weighted.py's)
UNWEIGHTED = ["user_id", "item_id", "genre", "item_pre", "age", "price", "vec"]


def unweighted(batch):
    """The batch without "tags" and without labels, as a ranker request."""
    batch.sequences.pop("tags", None)
    batch.weights.pop("tags", None)
    batch.labels = {}
    return batch


NUM_ITEMS, NUM_CATEGORIES, MAXLEN = 120, 12, 8
ORDER_SCHEMA = Schema.from_dict(
    {
        "embedding_dim": 8,
        "tables": {"item": {}, "category": {}},
        "features": [
            {"name": "item_id", "kind": "categorical", "table": "item"},
            {"name": "category", "kind": "categorical", "table": "category"},
            {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": MAXLEN},
            {"name": "hist_categories", "kind": "sequence", "table": "category", "maxlen": MAXLEN},
        ],
    }
)
ORDER_BEHAVIOURS = [
    {"candidate": "item_id", "history": "hist_item_ids"},
    {"candidate": "category", "history": "hist_categories"},
]


def order_records(n: int, seed: int) -> pa.RecordBatch:
    """Label 1 (flipped with probability 0.05) when the candidate's category is the category of
    the NEWEST behaviour. Half the candidates are drawn from that category; of the rest, most
    share the category of an older behaviour, so "the category appears in the history" (what an
    order-blind pooling sees) tells little: the signal is in the order."""
    rng = np.random.default_rng(seed)
    category_of = np.random.default_rng(99).integers(0, NUM_CATEGORIES, NUM_ITEMS)  # fixed catalogue
    items_of = [np.flatnonzero(category_of == c) for c in range(NUM_CATEGORIES)]
    histories = [rng.integers(0, NUM_ITEMS, k) for k in rng.integers(2, MAXLEN + 1, n)]
    candidates = np.empty(n, dtype=np.int64)
    for row, history in enumerate(histories):  # test data generation, not a hot path
        newest = category_of[history[-1]]
        older = [c for c in category_of[history[:-1]] if c != newest]
        draw = rng.random()
        category = newest if draw < 0.5 else (rng.choice(older) if older and draw < 0.9 else rng.integers(NUM_CATEGORIES))
        candidates[row] = rng.choice(items_of[category])
    label = (category_of[candidates] == np.array([category_of[h[-1]] for h in histories])) ^ (rng.random(n) < 0.05)
    return pa.RecordBatch.from_pydict(
        {
            "item_id": candidates,
            "category": category_of[candidates],
            "hist_item_ids": [",".join(map(str, h)) for h in histories],
            "hist_categories": [",".join(map(str, category_of[h])) for h in histories],
            "label": label.astype(np.float32),
        }
    )


def order_data(train_rows: int = 4000, test_rows: int = 1500):
    train_records, test_records = order_records(train_rows, 0), order_records(test_rows, 1)
    pre = fit(ORDER_SCHEMA, train_records)
    return pre.feature_map(), pre.transform(train_records), pre.transform(test_records)


def task_loss(model: nn.Module, batch) -> torch.Tensor:
    """What the binary task minimises: BCE on the logits plus the model's regularization."""
    from recstack.tasks import BinaryClassificationTask

    return BinaryClassificationTask().loss(model, batch)


def train_with_task(model: nn.Module, batch, *, epochs: int, lr: float = 0.01, batch_size: int = 256) -> None:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), batch_size):
            part = batch.select(order[start : start + batch_size])
            optimizer.zero_grad()
            task_loss(model, part).backward()
            optimizer.step()


def fitted_order_auc(model: nn.Module, data, *, epochs: int, lr: float = 0.01) -> float:
    _, train_batch, test_batch = data
    train_with_task(model, train_batch, epochs=epochs, lr=lr)
    return evaluate_auc(model, test_batch)
