"""Tiny synthetic data for the model tests, built through the real Preprocessor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.evaluation.ranking_metrics import auc
from recstack.vector_io.files import write_vectors
from recstack.vector_io.table import VectorTable
from recstack.schema import Schema

NUM_USERS, NUM_ITEMS, NUM_GENRES, MAXLEN = 20, 30, 5, 6
PRETRAINED_ITEMS = 20  # items i0..i19 have a pretrained vector, the others map to padding
DIM = 8


def write_pretrained(folder: Path) -> tuple[Path, np.ndarray]:
    """A frozen item table: vectors for i0..i19, dim 8, written as a Parquet vector file."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(PRETRAINED_ITEMS, DIM)).astype(np.float32)
    path = folder / "items.parquet"
    write_vectors(path, VectorTable(ids=[f"i{i}" for i in range(PRETRAINED_ITEMS)], vectors=vectors))
    return path, vectors


def full_schema(pretrained: Path) -> Schema:
    """Every kind of feature, all embedded features of dim 8 (so FM-style models apply)."""
    return Schema.from_dict(
        {
            "label": "label",
            "tables": {
                "user": {"dim": DIM},
                "item": {"dim": DIM},
                "genre": {"dim": DIM},
                "tag": {"dim": DIM},
                "pre": {"pretrained": str(pretrained), "trainable": False},
            },
            "features": [
                {"name": "user_id", "kind": "categorical", "table": "user", "side": "user"},
                {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
                {"name": "genre", "kind": "categorical", "table": "genre", "side": "item"},
                {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": MAXLEN, "side": "user"},
                {"name": "hist_genres", "kind": "sequence", "table": "genre", "maxlen": MAXLEN, "side": "user"},
                {"name": "tags", "kind": "sequence", "table": "tag", "maxlen": 4, "weights": "pairs", "pooling": "weighted_sum"},
                {"name": "item_pre", "kind": "categorical", "table": "pre", "column": "item_key", "side": "item"},
                {"name": "age", "kind": "numeric", "side": "user"},
                {"name": "price", "kind": "numeric", "transform": "bucketize", "num_buckets": 4, "dim": DIM},
                {"name": "vec", "kind": "vector", "dim": 3},
            ],
        }
    )


def full_records(n: int, seed: int = 0) -> pa.RecordBatch:
    """Random rows for :func:`full_schema`; histories are parallel (item i has genre i % 5)."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, NUM_ITEMS, n)
    lengths = rng.integers(0, MAXLEN + 1, n)
    lengths[0] = MAXLEN  # one full history
    lengths[1] = 0  # one empty history
    histories = [rng.integers(0, NUM_ITEMS, k) for k in lengths]
    tags = [
        ",".join(f"t{t}:{w:.2f}" for t, w in zip(rng.integers(0, 6, k), rng.uniform(0.1, 2.0, k)))
        for k in rng.integers(0, 4, n)
    ]
    return pa.RecordBatch.from_pydict(
        {
            "user_id": rng.integers(0, NUM_USERS, n),
            "item_id": items,
            "genre": items % NUM_GENRES,
            "hist_item_ids": [",".join(map(str, h)) for h in histories],
            "hist_genres": [",".join(str(i % NUM_GENRES) for i in h) for h in histories],
            "tags": tags,
            "item_key": [f"i{i}" for i in items],
            "age": rng.normal(40, 10, n),
            "price": rng.uniform(0, 100, n),
            "vec": pa.array(rng.normal(size=(n, 3)).tolist(), pa.list_(pa.float32())),
            "label": rng.integers(0, 2, n).astype(np.float32),
        }
    )


def fit(schema: Schema, records: pa.RecordBatch) -> Preprocessor:
    return Preprocessor(schema).fit([Chunk(records, "mem", 1)])


def pad_sequences(batch: Batch, extra: int) -> Batch:
    """The same batch with ``extra`` more padded positions at the end of every sequence."""

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, torch.zeros(t.shape[0], extra, dtype=t.dtype)], dim=1)

    return Batch(
        ids=dict(batch.ids),
        sequences={k: pad(v) for k, v in batch.sequences.items()},
        weights={k: pad(v) for k, v in batch.weights.items()},
        dense=dict(batch.dense),
        label=batch.label,
    )


def train(model: nn.Module, batch: Batch, *, epochs: int, lr: float = 0.01, batch_size: int = 256, seed: int = 0) -> None:
    """A plain Adam loop with binary cross-entropy on logits (the real trainer lives elsewhere)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), batch_size):
            part = batch.select(order[start : start + batch_size])
            loss = nn.functional.binary_cross_entropy_with_logits(model(part), part.label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def evaluate_auc(model: nn.Module, batch: Batch) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(batch)
    return auc(batch.label.numpy(), logits.numpy())


def model_params(name: str, **overrides: Any) -> dict[str, Any]:
    """Small per-model params for the full schema (fast to run)."""
    base: dict[str, dict[str, Any]] = {
        "lr": {},
        "fm": {},
        "embedding_mlp": {"hidden_dims": [16, 8]},
        "deep_crossing": {"residual_hidden_dims": [16, 8]},
        "wide_deep": {"hidden_dims": [16], "cross_features": [["user_id", "item_id"]], "cross_buckets": 97},
        "deepfm": {"hidden_dims": [16, 8]},
        "dcn": {"hidden_dims": [16], "num_cross_layers": 2},
        "dcn_v2": {"hidden_dims": [16], "num_cross_layers": 2},
        "din": {
            "behaviours": [
                {"candidate": "item_id", "history": "hist_item_ids"},
                {"candidate": "genre", "history": "hist_genres"},
            ],
            "attention_hidden_dims": [8, 4],
            "hidden_dims": [16, 8],
        },
    }
    return {**base[name], **overrides}


