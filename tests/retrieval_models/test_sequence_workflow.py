"""The training workflow wires a sequence model's losses: item frequencies for log-Q / popularity
sampling are counted over the next-item sequence (the model's positive_feature), not item_id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from recstack.config import RunConfig
from recstack.data.preprocessor import Preprocessor
from recstack.datasets.sequence_split import SequenceSplitSpec, split_sequences
from recstack.datasets.synthetic_sequences import generate_sequence_events
from recstack.models import build_model
from recstack.tasks import InBatchSoftmaxTask, SampledSoftmaxTask
from recstack.workflows.retrieval import build_retrieval_task

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, task: dict) -> tuple[RunConfig, Preprocessor]:
    events, _ = generate_sequence_events(num_users=50, num_items=30, length=8, seed=1)
    split = split_sequences(events, SequenceSplitSpec(max_len=10))
    for name in ("train", "valid"):
        pq.write_table(getattr(split, name), tmp_path / f"{name}.parquet")
    config = RunConfig.from_dict({
        "data": {"train": str(tmp_path / "train.parquet"), "valid": str(tmp_path / "valid.parquet")},
        "schema": str(ROOT / "schemas/movielens_sequences.yaml"), "task": task, "model": {"name": "sasrec"},
        "output": str(tmp_path / "run"),
    })  # fmt: skip
    return config, Preprocessor(config.schema).fit(config.data.train)


def test_popularity_and_log_q_count_the_next_item_sequence(tmp_path: Path) -> None:
    config, preprocessor = _config(tmp_path, {"type": "retrieval", "loss": "sampled_softmax", "num_negatives": 8})
    model = build_model("sasrec", preprocessor.feature_map(), {"num_layers": 1})
    task = build_retrieval_task(config, model, preprocessor)
    assert isinstance(task, SampledSoftmaxTask) and task.item_probs is not None
    targets = pq.read_table(tmp_path / "train.parquet")["target_item_ids"].combine_chunks().values.to_numpy()
    rows = preprocessor.transform(pq.read_table(tmp_path / "train.parquet").to_batches()[0], features=["target_item_ids"], with_label=False).sequences["target_item_ids"]
    counts = torch.bincount(rows[rows != 0], minlength=model.num_item_rows).double()
    assert len(targets) == int(counts.sum())  # every target position counted once
    assert torch.allclose(task.item_probs, counts / counts.sum())
    in_batch = build_retrieval_task(_config(tmp_path, {"type": "retrieval", "loss": "in_batch_softmax"})[0], model, preprocessor)
    assert isinstance(in_batch, InBatchSoftmaxTask)
    expected = torch.log(counts.clamp(min=1.0) / counts.clamp(min=1.0).sum()).float()
    assert torch.allclose(in_batch.item_log_probs, expected)
    batch = preprocessor.transform(pq.read_table(tmp_path / "train.parquet").to_batches()[0], with_label=False)
    assert np.isfinite(task.loss(model, batch).item())


def test_item_side_features_are_filled_from_the_catalogue(tmp_path: Path) -> None:
    import pyarrow as pa
    import pytest

    from recstack.datasets._features import attach
    from recstack.errors import ConfigError

    events, _ = generate_sequence_events(num_users=50, num_items=30, length=8, seed=1)
    items = pa.table({"item_id": pa.array(range(1, 31), pa.int64()), "genre": [f"g{i % 4}" for i in range(1, 31)]})
    split = split_sequences(events, SequenceSplitSpec(max_len=10))
    for name in ("train", "valid"):
        pq.write_table(attach(getattr(split, name), items, "item_id"), tmp_path / f"{name}.parquet")
    pq.write_table(items, tmp_path / "items.parquet")
    raw = {
        "data": {"train": str(tmp_path / "train.parquet"), "valid": str(tmp_path / "valid.parquet"), "catalog": str(tmp_path / "items.parquet")},
        "schema": str(ROOT / "schemas/movielens_sequences_genres.yaml"), "task": {"type": "retrieval", "loss": "full_softmax"},
        "model": {"name": "sasrec", "params": {"item_side_features": ["genre"]}}, "output": str(tmp_path / "run"),
    }  # fmt: skip
    config = RunConfig.from_dict(raw)
    preprocessor = Preprocessor(config.schema).fit(config.data.train)
    model = build_model("sasrec", preprocessor.feature_map(), {"num_layers": 1, "item_side_features": ["genre"]})
    build_retrieval_task(config, model, preprocessor)
    catalogue = preprocessor.transform(items.to_batches()[0], features=["item_id", "genre"], with_label=False)
    rows = model.attributes.rows[catalogue.ids["item_id"], 0]
    assert torch.equal(rows, catalogue.ids["genre"]) and bool((rows > 1).all())  # every item's genre, known
    without = RunConfig.from_dict({**raw, "data": {k: v for k, v in raw["data"].items() if k != "catalog"}})
    with pytest.raises(ConfigError, match="data.catalog: model 'sasrec' reads item side features"):
        build_retrieval_task(without, model, preprocessor)
