"""Synthetic retrieval data: users and items in latent clusters, written like ``build_retrieval``.

Each item belongs to one cluster; each user has a home cluster and draws a share
``in_cluster`` of their (distinct) items uniformly from it, the rest by global Zipf popularity.
A model that learns the clusters can rank a user's held-out item far above chance; popularity
alone cannot. Output files: train/valid/test/seen/items/users Parquet and ``stats.json``, with
the columns of ``build_retrieval`` that do not depend on MovieLens: user_id, item_id,
timestamp, hist_item_ids, hist_genres, genres/genre (the item cluster, as ``"c<k>"``) and the
user's ``segment`` (their cluster, observed with 20% noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.datasets._files import cached_stats
from recstack.datasets._sampling import zipf_ids
from recstack.datasets.retrieval_split import RETRIEVAL_FILES, write_retrieval

OVERSAMPLE = 1.5  # draws per wanted interaction, before removing repeated (user, item) pairs
SEGMENT_NOISE = 0.2


def generate_retrieval(
    out_dir: str | Path,
    *,
    num_users: int,
    num_items: int,
    interactions_per_user: int,
    seed: int = 0,
    num_clusters: int = 20,
    in_cluster: float = 0.8,
    history_len: int = 50,
) -> dict[str, Any]:
    """Write a planted-cluster retrieval data set to ``out_dir`` and return its stats.

    Every user gets up to ``interactions_per_user`` distinct items (all positive), ordered in
    time; the last two are held out as in ``build_retrieval``.
    """
    out = Path(out_dir)
    params = {
        "kind": "synthetic-retrieval", "num_users": num_users, "num_items": num_items,
        "interactions_per_user": interactions_per_user, "seed": seed, "num_clusters": num_clusters,
        "in_cluster": in_cluster, "history_len": history_len,
    }  # fmt: skip
    if (stats := cached_stats(out, RETRIEVAL_FILES, params)) is not None:
        return stats
    rng = np.random.default_rng([seed, 3])
    item_cluster = rng.integers(0, num_clusters, size=num_items)
    user_cluster = rng.integers(0, num_clusters, size=num_users)
    interactions = _interactions(rng, item_cluster, user_cluster, interactions_per_user, in_cluster)
    segment = np.where(rng.random(num_users) < SEGMENT_NOISE, rng.integers(0, num_clusters, size=num_users), user_cluster)
    users = pa.table({"user_id": pa.array(np.arange(1, num_users + 1)), "segment": _names("s", segment)})
    genre = _names("c", item_cluster)
    items = pa.table(
        {
            "item_id": pa.array(np.arange(1, num_items + 1)),
            "genres": pa.ListArray.from_arrays(pa.array(np.arange(num_items + 1, dtype=np.int32)), genre),
            "genre": genre,
        }
    )
    return write_retrieval(out, interactions, users, items, history_len=history_len, params=params)


def _interactions(
    rng: np.random.Generator,
    item_cluster: np.ndarray,
    user_cluster: np.ndarray,
    per_user: int,
    in_cluster: float,
) -> pa.Table:
    """Distinct (user, item) pairs, at most ``per_user`` per user, with increasing timestamps."""
    num_users, num_items = len(user_cluster), len(item_cluster)
    draws = int(np.ceil(per_user * OVERSAMPLE))
    users = np.repeat(np.arange(num_users), draws)
    items_by_cluster = np.argsort(item_cluster, kind="stable")
    sorted_clusters = item_cluster[items_by_cluster]
    cluster_start = np.searchsorted(sorted_clusters, user_cluster[users], side="left")
    cluster_stop = np.searchsorted(sorted_clusters, user_cluster[users], side="right")
    slot = cluster_start + (rng.random(len(users)) * (cluster_stop - cluster_start)).astype(np.int64)
    own = items_by_cluster[np.minimum(slot, num_items - 1)]
    popular = zipf_ids(rng, len(users), num_items, 1.0) - 1
    use_own = (rng.random(len(users)) < in_cluster) & (cluster_stop > cluster_start)
    items = np.where(use_own, own, popular)
    # keep each user's first draw of an item, then the first per_user of those
    _, first = np.unique(users.astype(np.int64) * num_items + items, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    group_start = np.searchsorted(users, users, side="left")
    rank = np.arange(len(users)) - group_start
    keep = rank < per_user
    users, items, rank = users[keep], items[keep], rank[keep]
    day = 86_400
    timestamps = rng.integers(0, 365 * day, size=num_users)[users] + rank * day
    return pa.table(
        {
            "user_id": pa.array(users + 1, pa.int64()),
            "item_id": pa.array(items + 1, pa.int64()),
            "timestamp": pa.array(timestamps, pa.int64()),
            "label": pa.array(np.ones(len(users), dtype=np.float32)),
        }
    )


def _names(prefix: str, codes: np.ndarray) -> pa.Array:
    """``prefix`` + code as strings, e.g. ``c3``."""
    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(codes).cast(pa.string()), "")
