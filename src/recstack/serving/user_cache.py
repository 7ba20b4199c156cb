"""What the service computes for a stored user, kept for the next request of the same user.

Shape legend: D user-vector dim.

A request that names a known user and overrides nothing (no ``features``, no ``history``) is a
pure function of files loaded at start-up: the stored user row and history. Its user-tower
vector ``(D,)`` (``(K, D)`` for a K-interest model) and its transformed ranker user row (a one-row ``Batch``) are therefore kept in
a bounded LRU, and the next request of that user skips the user-row assembly, both
preprocessor transforms and the user-tower forward (about a third of a request's CPU on
MovieLens-100K, ``docs/benchmarks.md``). The cache belongs to one ``ServingModels``: a swap to
new run folders starts an empty one, so a cached entry never outlives the models that made it.

Example::

    cache = UserCache(max_users=16_384)
    cache.put(42, UserState(vector=v, ranker_row=row))
    state = cache.get(42)  # None on a miss
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from recstack.data.batch import Batch
from recstack.serving.types import DEFAULT_USER_CACHE


@dataclass(frozen=True)
class UserState:
    """One stored user's served inputs: the user-tower vector and the ranker's user row."""

    vector: np.ndarray  # (D,), or (K, D) for a K-interest retrieval model
    ranker_row: Batch  # 1 row of the ranker's user-side features

    @classmethod
    def of_row(cls, vectors: np.ndarray, ranker_users: Batch, row: int) -> "UserState":
        """Row ``row`` of a batch's vectors ``(B, D)`` and ranker user rows, copied (a view
        would keep the whole batch alive in the cache)."""
        picked = ranker_users.select(slice(row, row + 1))
        for fields in (picked.ids, picked.sequences, picked.weights, picked.dense):
            for name, tensor in fields.items():
                fields[name] = tensor.clone()
        return cls(vector=vectors[row].copy(), ranker_row=picked)


class UserCache:
    """A thread-safe LRU of ``UserState`` keyed by user id; ``max_users=0`` keeps nothing.

    Args:
        max_users: the most users kept; the least recently used is dropped first. An entry is
            ~6 KB for the MovieLens DIN schema (measured: 942 users, +5.8 MB RSS).
    """

    def __init__(self, max_users: int = DEFAULT_USER_CACHE) -> None:
        if max_users < 0:
            raise ValueError(f"max_users must be >= 0, got {max_users}")
        self.max_users = max_users
        self._entries: OrderedDict[Hashable, UserState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: Any) -> UserState | None:
        with self._lock:
            state = self._entries.get(user_id)
            if state is None:
                self.misses += 1
                return None
            self._entries.move_to_end(user_id)
            self.hits += 1
            return state

    def put(self, user_id: Any, state: UserState) -> None:
        if self.max_users == 0:
            return
        with self._lock:
            self._entries[user_id] = state
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def stats(self) -> dict[str, int]:
        """Entries, hits and misses so far (for ``/health``)."""
        return {"users": len(self._entries), "max_users": self.max_users, "hits": self.hits, "misses": self.misses}
