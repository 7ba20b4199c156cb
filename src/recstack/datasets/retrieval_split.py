"""Leave-last-two-out retrieval splits over an interaction log.

Per user, the positives ordered by ``(timestamp, item_id)``::

    #  positives     p0   p1   p2   p3   p4         (a user with 5 positives)
    #  split         tr   tr   tr   va   te
    #  history of p2 [p0, p1]            (strictly earlier in time: ties excluded)
    #  history of p3 [p0, p1, p2]        (every positive before it in that order)
    #  history of p4 [p0, p1, p2, p3]    (includes the validation item)

Users with fewer than three positives keep all of them in train and are not evaluated.
``seen`` lists every item a user interacted with (positive or not) except the held-out two,
for excluding already-consumed items at evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.datasets._features import with_features
from recstack.datasets._files import write_stats, write_tables
from recstack.datasets._sequences import group_index, window_lists

MIN_POSITIVES = 3
SPLITS = ("train", "valid", "test")
RETRIEVAL_FILES = [f"{name}.parquet" for name in (*SPLITS, "seen", "items", "users")]


@dataclass(frozen=True)
class RetrievalSplit:
    """Tables of a leave-last-two-out split.

    Attributes:
        train: one row per training positive, the input columns (less ``label``) and
            ``hist_item_ids`` (list<int64>), sorted by user then time.
        valid: one row per evaluated user: the second-to-last positive and its history.
        test: one row per evaluated user: the last positive and its history.
        seen: ``user_id``, ``seen_item_ids`` (list<int64>, oldest first) per user.
    """

    train: pa.Table
    valid: pa.Table
    test: pa.Table
    seen: pa.Table


def leave_last_out(interactions: pa.Table, *, history_len: int) -> RetrievalSplit:
    """Split ``interactions`` (``user_id``, ``item_id``, ``timestamp``, ``label`` and any
    other columns, carried along) as drawn in the module docstring."""
    positives = interactions.filter(pc.equal(interactions["label"], 1))
    users = positives["user_id"].to_numpy()
    index = group_index(users, positives["timestamp"].to_numpy(), tiebreak=positives["item_id"].to_numpy())
    ordered = positives.drop_columns(["label"]).take(pa.array(index.order))
    positions = np.arange(ordered.num_rows, dtype=np.int64)
    rank, size = positions - index.group_start, _group_sizes(index.group_start)
    evaluated = size >= MIN_POSITIVES
    is_test = evaluated & (rank == size - 1)
    is_valid = evaluated & (rank == size - 2)
    held = is_test | is_valid
    # held-out rows see every earlier positive in order; training rows only strictly earlier ones
    stop = np.where(held, positions, index.tie_start)
    history = window_lists(ordered["item_id"].combine_chunks(), index.group_start, stop, history_len)
    ordered = ordered.append_column("hist_item_ids", history)
    held_keys = _pair_keys(ordered["user_id"].to_numpy()[held], ordered["item_id"].to_numpy()[held])
    return RetrievalSplit(
        train=ordered.filter(pa.array(~held)),
        valid=ordered.filter(pa.array(is_valid)),
        test=ordered.filter(pa.array(is_test)),
        seen=_seen_items(interactions, held_keys),
    )


def write_retrieval(
    out_dir: Path, interactions: pa.Table, users: pa.Table, items: pa.Table, *, history_len: int, params: dict[str, Any]
) -> dict[str, Any]:
    """Split, join user/item features (and ``hist_genres`` from ``items.genre``), write
    ``RETRIEVAL_FILES`` plus ``stats.json``, and return the stats."""
    split = leave_last_out(interactions, history_len=history_len)
    tables = {name: with_features(getattr(split, name), users, items) for name in SPLITS}
    write_tables(out_dir, {**tables, "seen": split.seen, "items": items, "users": users})
    stats = retrieval_stats(tables, users, items, params)
    write_stats(out_dir, stats)
    return stats


def retrieval_stats(tables: dict[str, pa.Table], users: pa.Table, items: pa.Table, params: dict[str, Any]) -> dict[str, Any]:
    """Counts of a retrieval build: users, items, rows per split."""
    return {
        "params": params,
        "users": users.num_rows,
        "items": items.num_rows,
        "evaluated_users": tables["test"].num_rows,
        "train_rows": tables["train"].num_rows,
        "rows": {name: table.num_rows for name, table in tables.items()},
    }


def _group_sizes(group_start: np.ndarray) -> np.ndarray:
    """Size of each row's group, from sorted group starts, ``(N,)``."""
    starts = np.flatnonzero(np.r_[True, group_start[1:] != group_start[:-1]])
    sizes = np.diff(np.r_[starts, len(group_start)])
    return np.repeat(sizes, sizes)


def _pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``(user_id, item_id)`` pairs packed into one int64 each, for set membership."""
    return users.astype(np.int64) * (1 << 31) + items.astype(np.int64)


def _seen_items(interactions: pa.Table, held_keys: np.ndarray) -> pa.Table:
    """Per user, every interacted item except the held-out pairs, oldest first."""
    users = interactions["user_id"].to_numpy()
    items = interactions["item_id"].to_numpy()
    order = np.lexsort((items, interactions["timestamp"].to_numpy(), users))
    users, items = users[order], items[order]
    keep = ~np.isin(_pair_keys(users, items), held_keys)
    user_ids, first = np.unique(users, return_index=True)
    kept_before = np.r_[0, np.cumsum(keep)]  # kept rows before each sorted position
    offsets = kept_before[np.r_[first, len(users)]].astype(np.int32)
    seen = pa.ListArray.from_arrays(pa.array(offsets), pa.array(items[keep], pa.int64()))
    return pa.table({"user_id": pa.array(user_ids, pa.int64()), "seen_item_ids": seen})
