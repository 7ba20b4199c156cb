"""Two planted targets (click, and like given click) through the real Preprocessor; a plain Adam
loop over the multi_task task (the real trainer is exercised in test_workflow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.datasets.multi_task import generate_multitask
from recstack.evaluation.ranking_metrics import auc
from recstack.schema import Schema
from recstack.tasks.multi_task import MultiTaskTask

SCHEMA = {
    "targets": [{"name": "click"}, {"name": "like", "condition": "click"}],
    "embedding_dim": 8,
    "group": "user_id",
    "features": [
        {"name": "user_group", "kind": "categorical"},
        {"name": "item_cat", "kind": "categorical"},
        {"name": "x", "kind": "numeric"},
    ],
}

SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "shared_bottom": {"hidden_dims": [32], "tower_dims": [16]},
    "esmm": {"hidden_dims": [32], "tower_dims": [16]},
    "mmoe": {"num_experts": 3, "hidden_dims": [16], "tower_dims": [16]},
    "ple": {"num_levels": 2, "num_shared_experts": 2, "num_specific_experts": 1, "hidden_dims": [16], "tower_dims": [16]},
}
MODELS = list(SMALL_PARAMS)


def schema() -> Schema:
    return Schema.from_dict(SCHEMA)


def write_data(folder: Path, rows: tuple[int, int, int] = (8000, 2000, 3000), seed: int = 0) -> Path:
    generate_multitask(folder, rows=rows, seed=seed)
    return folder


def read_batch(pre: Preprocessor, path: Path) -> Batch:
    return pre.transform(Chunk(pq.read_table(path).combine_chunks().to_batches()[0], str(path), 1))


def fitted(folder: Path) -> tuple[Preprocessor, Batch, Batch]:
    pre = Preprocessor(schema())
    pre.fit([Chunk(pq.read_table(folder / "train.parquet").combine_chunks().to_batches()[0], "train", 1)])
    return pre, read_batch(pre, folder / "train.parquet"), read_batch(pre, folder / "test.parquet")


def task_for(model: nn.Module, **params: Any) -> MultiTaskTask:
    task = MultiTaskTask(**params).with_schema_targets(schema().targets)
    task.check_model(model)
    return task


def train(model: nn.Module, task: MultiTaskTask, batch: Batch, *, epochs: int = 4, lr: float = 0.01, batch_size: int = 256) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), batch_size):
            loss = task.loss(model, batch.select(order[start : start + batch_size]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def head_aucs(model: nn.Module, task: MultiTaskTask, batch: Batch) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        heads = {k: v.numpy() for k, v in task.predict_heads(model, batch).items()}
    click, like = batch.labels["click"].numpy(), batch.labels["like"].numpy()
    clicked = click == 1
    return {"click": auc(click, heads["click"]), "like": auc(like[clicked], heads["like"][clicked])}


def records(n: int, **columns: Any) -> pa.RecordBatch:
    rng = np.random.default_rng(0)
    base = {"user_id": rng.integers(0, 5, n), "user_group": rng.integers(0, 3, n), "item_cat": rng.integers(0, 4, n),
            "x": rng.normal(size=n), "click": np.ones(n, np.float32), "like": np.zeros(n, np.float32)}  # fmt: skip
    base.update(columns)
    return pa.RecordBatch.from_pydict(base)
