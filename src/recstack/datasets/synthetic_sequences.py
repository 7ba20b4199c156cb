"""Synthetic sequences with planted transitions: a model that learns order beats popularity.

Each item i has a fixed successor ``next[i]`` (a random permutation). A user starts at a random
item; each following item is ``next[previous]`` with probability ``follow``, else an item drawn
by Zipf popularity. The next item is therefore predictable from the last one alone, while
popularity (and any order-blind model of the history as a bag) predicts it poorly: Recall@10 of
the planted rule is about ``follow``, of popularity about 10 / num_items under a flat catalogue.

``generate_sequence_events`` returns the events (user_id, item_id, timestamp);
``generate_sequences`` writes them split like :func:`recstack.datasets.build_sequences`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.atomic import atomic_path
from recstack.data.sources import DataSource
from recstack.datasets._files import write_stats
from recstack.datasets._sampling import zipf_ids
from recstack.datasets.sequence_split import SequenceSplitSpec, sequence_params, write_sequence_split

__all__ = ["generate_sequence_events", "generate_sequences"]


def generate_sequence_events(
    *, num_users: int, num_items: int, length: int, follow: float = 0.8, seed: int = 0
) -> tuple[pa.Table, np.ndarray]:
    """``(events, next_item)``: ``length`` events per user (item ids 1..num_items, timestamps
    0..length-1) and the planted successor of each item id (``next_item[i]``, index 0 unused)."""
    rng = np.random.default_rng(seed)
    successor = np.r_[0, rng.permutation(num_items) + 1]  # (num_items + 1,) item id -> next item id
    items = np.empty((num_users, length), dtype=np.int64)  # (U, T)
    items[:, 0] = rng.integers(1, num_items + 1, num_users)
    for t in range(1, length):  # one step for every user at once
        follows = rng.random(num_users) < follow
        noise = zipf_ids(rng, num_users, num_items)  # 1..num_items
        items[:, t] = np.where(follows, successor[items[:, t - 1]], noise)
    events = pa.table({
        "user_id": np.repeat(np.arange(1, num_users + 1, dtype=np.int64), length),
        "item_id": items.reshape(-1),
        "timestamp": np.tile(np.arange(length, dtype=np.int64), num_users),
    })  # fmt: skip
    return events, successor


def generate_sequences(
    out_dir: str | Path, *, num_users: int = 1000, num_items: int = 500, length: int = 20, follow: float = 0.8,
    seed: int = 0, max_len: int = 50,
) -> dict[str, Any]:
    """Write the planted-transition events as a leave-one-out sequence data set (with an item
    catalogue ``items.parquet``) to ``out_dir``; returns its stats."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events, _ = generate_sequence_events(num_users=num_users, num_items=num_items, length=length, follow=follow, seed=seed)
    path = out / "events.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(events, tmp)
    spec = SequenceSplitSpec(max_len=max_len)
    catalogue = pa.table({"item_id": np.arange(1, num_items + 1, dtype=np.int64)})
    split = write_sequence_split(DataSource(paths=(str(path),)), out, spec, extra_tables={"items": catalogue})
    path.unlink()
    params = {"kind": "synthetic_sequences", "num_users": num_users, "num_items": num_items, "length": length,
              "follow": follow, "seed": seed, **sequence_params(spec)}  # fmt: skip
    stats = {"params": params, "items": num_items, **split.as_dict()}
    write_stats(out, stats)
    return stats
