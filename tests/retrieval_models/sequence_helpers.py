"""A small sequence feature map and batches for SASRec / GRU4Rec tests."""

from __future__ import annotations

import torch

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap, TableInfo
from recstack.schema import Schema

ROWS, L = 40, 6


def sequence_feature_map(*, num_rows: int = ROWS, maxlen: int = L, dim: int = 16, genres: int = 0) -> FeatureMap:
    """The three sequence features on one item table; with ``genres``, an item-side ``genre``
    (``genres`` rows, dim 4) and a user-side ``age`` (for error tests)."""
    features = [
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": maxlen, "side": "user"},
        {"name": "target_item_ids", "kind": "sequence", "table": "item", "maxlen": maxlen},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
    ]
    tables = {"item": TableInfo(name="item", num_rows=num_rows, dim=dim)}
    if genres:
        features += [{"name": "genre", "kind": "categorical", "side": "item", "dim": 4}, {"name": "age", "kind": "categorical", "side": "user", "dim": 4}]
        tables.update(genre=TableInfo(name="genre", num_rows=genres, dim=4), age=TableInfo(name="age", num_rows=5, dim=4))
    schema = Schema.from_dict({"label": None, "tables": {"item": {"dim": dim}}, "features": features})
    return FeatureMap(schema=schema, tables=tables)


def sequence_batch(batch_size: int = 5, *, length: int = L, seed: int = 0, num_rows: int = ROWS) -> Batch:
    """Left-aligned histories of random lengths (row 0 empty, row 1 full), targets = next items."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(2, num_rows, (batch_size, length + 1), generator=g)
    lengths = torch.randint(1, length + 1, (batch_size,), generator=g)
    lengths[0], lengths[1] = 0, length
    real = torch.arange(length) < lengths.unsqueeze(1)  # (B, L)
    history = items[:, :-1].masked_fill(~real, 0)
    targets = items[:, 1:].masked_fill(~real, 0)
    last = targets.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    return Batch(ids={"item_id": last}, sequences={"hist_item_ids": history, "target_item_ids": targets})
