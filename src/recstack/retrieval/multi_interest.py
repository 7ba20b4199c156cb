"""Search an index with K vectors per user: B * K queries, merged per user by max score, deduped.

Shape legend: B users, K interests, D dim, n results per user.

``search_interests(index, queries, n)`` takes ``(B, D)`` (one search, as ``index.search``) or
``(B, K, D)`` (ComiRec, MIND): every interest retrieves its own top n (the user's exclusions
applied to each), and :func:`~recstack.evaluation.multi_interest.merge_by_max` keeps each item
once, with its best interest's score, the top n overall. Ids come back in the index's type
(int64 with -1, or object str with None, where fewer than n distinct items exist).

Example::

    scores, ids = search_interests(index, user_vectors, 50, exclude=histories)  # (B, 50) each
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recstack.evaluation.multi_interest import PAD_KEY, merge_by_max
from recstack.retrieval.index.base import VectorIndex
from recstack.retrieval.index.ids import found_mask

__all__ = ["search_interests"]


def search_interests(
    index: VectorIndex, queries: np.ndarray, n: int, *, exclude: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` items per user from ``(B, D)`` or ``(B, K, D)`` query vectors.

    Args:
        index: any :class:`VectorIndex`.
        queries: ``(B, D)`` or ``(B, K, D)`` float32.
        n: results per user.
        exclude: one array of ids per user (B of them), excluded from every interest's search.

    Returns:
        ``scores (B, n)`` float32 descending and ``ids (B, n)`` in the index's id type.
    """
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 2:
        return index.search(queries, n, exclude=exclude)
    if queries.ndim != 3:
        raise ValueError(f"queries must be (B, D) or (B, K, D), got shape {queries.shape}")
    users, interests, dim = queries.shape
    per_interest = None if exclude is None else [e for e in exclude for _ in range(interests)]  # user b's, K times
    scores, ids = index.search(queries.reshape(users * interests, dim), n, exclude=per_interest)  # (B*K, n)
    found = found_mask(ids)
    if ids.dtype == object:  # string ids: merge integer codes, map the kept ones back
        names, codes = np.unique(ids[found].astype(str), return_inverse=True)
        keys = np.full(ids.shape, PAD_KEY, dtype=np.int64)
        keys[found] = codes
    else:
        keys = np.where(found, ids, PAD_KEY).astype(np.int64)
    merged_scores, merged_keys = merge_by_max(scores.reshape(users, -1), keys.reshape(users, -1), n)  # (B, n)
    if ids.dtype != object:
        return merged_scores, merged_keys
    merged_ids = np.full(merged_keys.shape, None, dtype=object)
    kept = merged_keys != PAD_KEY
    merged_ids[kept] = names[merged_keys[kept]].astype(object)
    return merged_scores, merged_ids
