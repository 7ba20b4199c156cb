"""Retrieval with K vectors per user (ComiRec, MIND): each interest searches, results merge by max.

Shape legend: B users, K interests, D dim, N corpus items, M results per interest, n kept.

A multi-interest user u has vectors v_1..v_K. Each retrieves its top M; the K lists are merged,
an item found by several interests keeping its best score, and the top n of the merged list
are the user's results::

    # interest 1   [(a, 0.9), (b, 0.5)]        merged   [(a, 0.9), (c, 0.7), (b, 0.6)]
    # interest 2   [(c, 0.7), (b, 0.6)]        (b kept once, with its better score)

Over the whole corpus this is the same as ranking every item by ``max_k v_k . e_i``: an item in
the merged top n is in the top n of the interest giving its max score (any item above it there
is above it in the merge too). Full-corpus evaluation therefore scores with
:func:`max_interest_scores`, and :func:`merge_by_max` merges the per-interest lists an index
returns (serving, ``recstack query``). Both are vectorised: no loop per user.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["PAD_KEY", "max_interest_scores", "merge_by_max"]

PAD_KEY = -1  # an absent result (an index returns fewer than M items)


def max_interest_scores(users: Tensor, items_t: Tensor) -> Tensor:
    """``(C, N)`` scores of every item for each user: ``max_k v_k . e_i``.

    Args:
        users: ``(C, K, D)`` interests, or ``(C, D)`` single vectors (then a plain product).
        items_t: ``(D, N)`` item vectors, transposed.

    Example:
        >>> users = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one user, two interests
        >>> max_interest_scores(users, torch.tensor([[2.0, -1.0], [0.5, 3.0]])).tolist()
        [[2.0, 3.0]]
    """
    if users.ndim == 2:
        return users @ items_t  # (C, N)
    if users.ndim != 3:
        raise ValueError(f"user vectors must be (C, D) or (C, K, D), got shape {tuple(users.shape)}")
    return torch.matmul(users, items_t).amax(dim=1)  # (C, K, N) -> (C, N)


def merge_by_max(scores: np.ndarray, keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge each user's K result lists: one entry per item with its best score, the top ``n``.

    Args:
        scores: ``(B, K, M)`` or ``(B, K * M)`` float scores (-inf where padded).
        keys: int64 item keys of the same shape, ``PAD_KEY`` (-1) where padded.
        n: results kept per user.

    Returns:
        ``scores (B, n)`` float32 descending and ``keys (B, n)`` int64; -inf and ``PAD_KEY``
        where the user has fewer than ``n`` distinct items. Equal scores keep the order of the
        interests (the first interest's result first).

    Example:
        >>> scores = np.array([[[0.9, 0.5], [0.7, 0.6]]])
        >>> keys = np.array([[[1, 2], [3, 2]]])
        >>> merged_scores, merged_keys = merge_by_max(scores, keys, 3)
        >>> merged_keys.tolist(), [round(float(s), 2) for s in merged_scores[0]]
        ([[1, 3, 2]], [0.9, 0.7, 0.6])
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    batch = scores.shape[0]
    flat_scores = np.asarray(scores, dtype=np.float32).reshape(batch, -1)  # (B, K*M)
    flat_keys = np.asarray(keys, dtype=np.int64).reshape(batch, -1)
    if flat_scores.shape != flat_keys.shape:
        raise ValueError(f"scores {scores.shape} and keys {keys.shape} must have one shape")
    flat_scores = np.where(flat_keys == PAD_KEY, -np.inf, flat_scores).astype(np.float32)
    by_score = np.argsort(-flat_scores, axis=1, kind="stable")  # (B, K*M) best first
    ranked_scores = np.take_along_axis(flat_scores, by_score, axis=1)
    ranked_keys = np.take_along_axis(flat_keys, by_score, axis=1)
    # a stable sort by key keeps each key's best-scored copy first; later copies are duplicates
    by_key = np.argsort(ranked_keys, axis=1, kind="stable")  # (B, K*M)
    sorted_keys = np.take_along_axis(ranked_keys, by_key, axis=1)
    repeat = np.zeros_like(sorted_keys, dtype=bool)
    repeat[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    duplicate = np.empty_like(repeat)
    np.put_along_axis(duplicate, by_key, repeat, axis=1)  # back to score order
    duplicate |= ranked_keys == PAD_KEY
    ranked_scores = np.where(duplicate, -np.inf, ranked_scores)
    ranked_keys = np.where(duplicate, PAD_KEY, ranked_keys)
    keep = np.argsort(duplicate, axis=1, kind="stable")[:, :n]  # distinct items first, in score order
    merged_scores = np.take_along_axis(ranked_scores, keep, axis=1)
    merged_keys = np.take_along_axis(ranked_keys, keep, axis=1)
    if merged_scores.shape[1] < n:  # fewer than n results in all: pad
        pad = n - merged_scores.shape[1]
        merged_scores = np.pad(merged_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        merged_keys = np.pad(merged_keys, ((0, 0), (0, pad)), constant_values=PAD_KEY)
    return merged_scores.astype(np.float32), merged_keys
