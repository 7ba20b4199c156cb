"""Full-corpus top-K retrieval metrics: recall@K, hitrate@K, NDCG@K and MRR.

Shape legend: U users, N items (the whole corpus), D vector dim, C users in one chunk,
P (user, target) pairs, K cut-off.

Every user is scored against all N items (no sampled negatives), a chunk of users at a time, so
the (C, N) score matrix is the only large tensor. Users and targets are rows of CSR arrays::

    #                 user 0    user 1     user 2
    # targets         [7]       [3, 9]     []          <- user 2 has no target: not evaluated
    target_indptr  = [0, 1, 3, 3]; target_indices = [7, 3, 9]
    # exclude         [1, 2]    []         [4]         <- items seen in training
    exclude_indptr = [0, 2, 2, 3]; exclude_indices = [1, 2, 4]

Rank of a target = 1 + the number of other non-excluded items scoring at least as high. Two
choices in that line, both deliberate:

* Excluded items are set to -inf, but a target is never excluded even when the user also saw it
  in training (re-consumption): removing it would silently drop the user's only positive.
* Ties count against the target (pessimistic). Counting only strictly higher items would give a
  collapsed model that scores every item the same a perfect rank of 1; ``torch.topk``'s
  arbitrary tie order is not reproducible either. With continuous scores ties do not occur and
  all conventions agree. NaN scores are an error for the same reason.

Counting ranks needs one comparison pass over the (C, N) scores and gives MRR over the full
ranking; top-K membership is then ``rank <= K``, so no separate ``topk`` is run.

Metrics per user, averaged over users with at least one target (T = the user's targets):

* hitrate@K = 1 if any target has rank <= K.
* recall@K = hits / |T| (the standard definition; with one target it equals hitrate@K).
* ndcg@K = sum over hits of 1 / log2(rank + 1), divided by the ideal
  sum_{i=1..min(|T|, K)} 1 / log2(i + 1).
* mrr = 1 / the best target rank (no cut-off).

Example:
    >>> user_vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (U=2, D=2)
    >>> item_vectors = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 3.0]])  # (N=4, D)
    >>> metrics = evaluate_retrieval(user_vectors, item_vectors, [1, 3], ks=(1, 2),
    ...                              exclude=(np.array([0, 1, 1]), np.array([0])))
    >>> metrics["hitrate@1"], metrics["mrr"]  # user 0: item 0 excluded so target 1 ranks first
    (1.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from recstack.evaluation.multi_interest import max_interest_scores

# A chunk of user rows (C,) int64 -> (C, N) scores, higher is better. The evaluator writes -inf
# into the returned matrix, so it must be a fresh array/tensor, not a cached one.
ScoreFn = Callable[[np.ndarray], Union[Tensor, np.ndarray]]
# (indptr (U + 1,), indices (nnz,)), or anything with .indptr/.indices (scipy.sparse.csr_matrix).
CSR = Union[tuple[ArrayLike, ArrayLike], Any]


def evaluate_retrieval(
    user_vectors: Tensor,
    item_vectors: Tensor,
    targets: ArrayLike | None = None,
    *,
    target_indptr: ArrayLike | None = None,
    target_indices: ArrayLike | None = None,
    exclude: CSR | None = None,
    ks: Sequence[int] = (10, 50),
    batch_size: int = 1024,
) -> dict:
    """Top-K metrics of dot-product retrieval over the whole item corpus.

    Args:
        user_vectors: ``(U, D)`` query embeddings; row u is user u. ``(U, K, D)``: K interests per
            user, an item scored by the best one (``evaluation.multi_interest``).
        item_vectors: ``(N, D)`` item embeddings, on the same device.
        targets: ``(U,)`` the single held-out item row of each user; or leave None and give
            ``target_indptr`` ``(U + 1,)`` / ``target_indices`` for several targets per user.
        exclude: CSR ``(indptr (U + 1,), indices)`` of items each user saw in training; they are
            removed from the ranking (targets excepted, see the module docstring).
        ks: cut-offs K.
        batch_size: users scored per chunk C; peak memory is about ``C * N`` floats.

    Returns:
        ``{"recall@K", "hitrate@K", "ndcg@K" for each K, "mrr": float, "users": int}``.
    """
    if user_vectors.ndim not in (2, 3) or item_vectors.ndim != 2:
        raise ValueError("user_vectors and item_vectors must be (U, D) or (U, K, D), and (N, D)")
    if len(user_vectors) != _num_users(targets, target_indptr):
        raise ValueError("user_vectors must have one row per user of the targets")
    items_t = item_vectors.detach().T  # (D, N)

    def score_chunk(rows: np.ndarray) -> Tensor:
        chunk = user_vectors.detach()[int(rows[0]) : int(rows[-1]) + 1]  # (C, D) or (C, K, D), rows contiguous
        return max_interest_scores(chunk, items_t)  # (C, N)

    return evaluate_ranked_scores(
        score_chunk,
        targets,
        target_indptr=target_indptr,
        target_indices=target_indices,
        exclude=exclude,
        ks=ks,
        batch_size=batch_size,
    )


@torch.no_grad()
def evaluate_ranked_scores(
    score_fn: ScoreFn,
    targets: ArrayLike | None = None,
    *,
    target_indptr: ArrayLike | None = None,
    target_indices: ArrayLike | None = None,
    exclude: CSR | None = None,
    ks: Sequence[int] = (10, 50),
    batch_size: int = 1024,
) -> dict:
    """Top-K metrics for any scorer (EASE, kNN, a two-tower model) given as a callable.

    Args:
        score_fn: user rows ``(C,)`` int64, contiguous and ascending -> ``(C, N)`` scores as a
            tensor or NumPy array; must return a fresh matrix (it is overwritten with -inf).
        targets, target_indptr, target_indices, exclude, ks, batch_size: as in
            :func:`evaluate_retrieval`; the number of users U comes from the targets.

    Returns:
        ``{"recall@K", "hitrate@K", "ndcg@K" for each K, "mrr": float, "users": int}``.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    target_ptr, target_items = _targets_csr(targets, target_indptr, target_indices)
    num_users = len(target_ptr) - 1
    if exclude is None:
        exclude_ptr, exclude_items = np.zeros(num_users + 1, np.int64), np.zeros(0, np.int64)
    else:
        exclude_ptr, exclude_items = _as_csr(exclude)
        if len(exclude_ptr) != num_users + 1:
            raise ValueError(f"exclude has {len(exclude_ptr) - 1} users, targets have {num_users}")

    ranks = np.empty(len(target_items), np.int64)  # (P,) rank of each (user, target) pair
    for start in range(0, num_users, batch_size):
        end = min(start + batch_size, num_users)
        if target_ptr[start] == target_ptr[end]:
            continue  # no targets in this chunk: skip scoring it
        scores = _as_tensor(score_fn(np.arange(start, end, dtype=np.int64)))  # (C, N)
        if scores.shape[0] != end - start:
            raise ValueError(f"score_fn returned {scores.shape[0]} rows for {end - start} users")
        pairs = slice(target_ptr[start], target_ptr[end])
        ranks[pairs] = _chunk_ranks(
            scores,
            target_rows=_row_of_each(target_ptr[start : end + 1]),
            target_items=target_items[pairs],
            exclude_rows=_row_of_each(exclude_ptr[start : end + 1]),
            exclude_items=exclude_items[exclude_ptr[start] : exclude_ptr[end]],
        )
    return _metrics_from_ranks(ranks, target_ptr, ks)


def _chunk_ranks(
    scores: Tensor,
    *,
    target_rows: np.ndarray,
    target_items: np.ndarray,
    exclude_rows: np.ndarray,
    exclude_items: np.ndarray,
) -> np.ndarray:
    """``(P,)`` rank of each target among the non-excluded items of its row of ``scores``."""
    num_rows, num_items = scores.shape  # (C, N)
    if len(target_items) and (target_items.min() < 0 or target_items.max() >= num_items):
        raise ValueError(f"target item rows must lie in [0, {num_items})")
    # A NaN anywhere makes the sum NaN; only then pay for the exact elementwise check
    # (the sum is also NaN when +inf and -inf both occur).
    if torch.isnan(scores.sum()) and torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    device = scores.device
    t_rows = torch.as_tensor(target_rows, device=device)
    t_items = torch.as_tensor(target_items, device=device)
    target_scores = scores[t_rows, t_items]  # (P,), read before exclusion: targets stay ranked
    e_rows = torch.as_tensor(exclude_rows, device=device)
    e_items = torch.as_tensor(exclude_items, device=device)
    scores[e_rows, e_items] = -torch.inf
    scores[t_rows, t_items] = target_scores

    if len(target_rows) == num_rows and np.array_equal(target_rows, np.arange(num_rows)):
        # One target per row (the common case): compare in place, no row gather.
        # int32 accumulation: counting a bool matrix into int64 is 3x slower on CPU
        at_least = (scores >= target_scores[:, None]).sum(dim=1, dtype=torch.int32)  # (C,)
    else:
        at_least = torch.empty(len(target_rows), dtype=torch.int32, device=device)
        for lo in range(0, len(target_rows), num_rows):  # bound the (pairs, N) gather to (C, N)
            hi = min(lo + num_rows, len(target_rows))
            rows = scores.index_select(0, t_rows[lo:hi])  # (pairs, N)
            at_least[lo:hi] = (rows >= target_scores[lo:hi, None]).sum(dim=1, dtype=torch.int32)
    # at_least counts the target itself, so it already is 1 + items scoring >= the target.
    return at_least.cpu().numpy().astype(np.int64)


def _metrics_from_ranks(ranks: np.ndarray, target_ptr: np.ndarray, ks: tuple[int, ...]) -> dict:
    """Average per-user metrics from ``(P,)`` target ranks grouped by ``target_ptr`` rows."""
    num_targets = np.diff(target_ptr)  # (U,)
    has_target = num_targets > 0
    num_evaluated = int(has_target.sum())
    metrics: dict = {}
    if num_evaluated == 0:
        for k in ks:
            for name in ("recall", "hitrate", "ndcg"):
                metrics[f"{name}@{k}"] = float("nan")
        metrics.update(mrr=float("nan"), users=0)
        return metrics

    starts = target_ptr[:-1][has_target]  # (U',) first pair of each evaluated user
    counts = num_targets[has_target].astype(np.float64)  # (U',)
    gains = 1.0 / np.log2(ranks + 1.0)  # (P,)
    for k in ks:
        hit = ranks <= k  # (P,)
        hits = np.add.reduceat(hit.astype(np.float64), starts)  # (U',)
        dcg = np.add.reduceat(np.where(hit, gains, 0.0), starts)  # (U',)
        ideal_discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))  # (K,) ideal DCG by #hits
        ideal = ideal_discounts[np.minimum(counts, k).astype(np.int64) - 1]  # (U',)
        metrics[f"recall@{k}"] = float(np.mean(hits / counts))
        metrics[f"hitrate@{k}"] = float(np.mean(hits > 0))
        metrics[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
    best_rank = np.minimum.reduceat(ranks, starts)  # (U',)
    metrics["mrr"] = float(np.mean(1.0 / best_rank))
    metrics["users"] = num_evaluated
    return metrics


def _targets_csr(
    targets: ArrayLike | None, indptr: ArrayLike | None, indices: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Targets as CSR ``(indptr (U + 1,), indices (P,))``, whichever form they came in."""
    if targets is not None:
        if indptr is not None or indices is not None:
            raise ValueError("give either targets or target_indptr/target_indices, not both")
        items = _as_int_array(targets)
        return np.arange(len(items) + 1, dtype=np.int64), items
    if indptr is None or indices is None:
        raise ValueError("give targets, or both target_indptr and target_indices")
    return _check_csr(_as_int_array(indptr), _as_int_array(indices), "targets")


def _num_users(targets: ArrayLike | None, indptr: ArrayLike | None) -> int:
    if targets is not None:
        return len(_as_int_array(targets))
    return len(_as_int_array(indptr)) - 1 if indptr is not None else 0


def _as_csr(matrix: CSR) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(matrix, "indptr") and hasattr(matrix, "indices"):
        indptr, indices = matrix.indptr, matrix.indices
    else:
        indptr, indices = matrix
    return _check_csr(_as_int_array(indptr), _as_int_array(indices), "exclude")


def _check_csr(indptr: np.ndarray, indices: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    valid = len(indptr) > 0 and indptr[0] == 0 and indptr[-1] == len(indices)
    if not valid or (np.diff(indptr) < 0).any():
        raise ValueError(f"{name} is not a valid CSR (indptr, indices) pair")
    return indptr, indices


def _row_of_each(indptr_slice: np.ndarray) -> np.ndarray:
    """Chunk-local row of every entry of a CSR slice: ``[0, 2, 3] -> [0, 0, 1]``."""
    return np.repeat(np.arange(len(indptr_slice) - 1, dtype=np.int64), np.diff(indptr_slice))


def _as_int_array(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _as_tensor(scores: Tensor | np.ndarray) -> Tensor:
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(np.ascontiguousarray(scores))  # shares memory: no copy
    if scores.ndim != 2:
        raise ValueError(f"score_fn must return (C, N) scores, got shape {tuple(scores.shape)}")
    return scores if scores.is_floating_point() else scores.double()  # -inf needs a float
