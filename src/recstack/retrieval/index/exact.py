"""Brute-force inner-product search: the reference the approximate indexes are measured against.

Shape legend: Q queries, C queries per chunk, N indexed vectors, D dim, K top-k.

Vectors are stored against int64 keys: the ids themselves for int ids, positions in an
``IdMap`` for string ids (see ``ids.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from recstack.retrieval.index.base import (
    VectorIndex,
    as_vectors,
    empty_results,
    index_file,
    load_npy,
    npy_writer,
    read_manifest,
    register_index,
    write_index_files,
)
from recstack.retrieval.index.ids import IdMap, IdType


@register_index("exact")
class ExactIndex(VectorIndex):
    """Every query is scored against every vector (a matrix product), then ``torch.topk``.

    Vectors live in one growable float32 buffer; queries are processed in chunks so the
    ``(C, N)`` score matrix stays under ``score_budget_bytes``. Uses torch's CPU threads
    (``torch.set_num_threads``).

    Args:
        dim: D, the vector dimension.
        score_budget_bytes: memory for one chunk's score matrix.
        id_type: "int" or "str"; None takes the type of the first ids added.

    Example:
        >>> index = ExactIndex(dim=2)
        >>> index.add(np.array([10, 11, 12]), np.array([[1, 0], [0, 1], [0.5, 0.5]]))
        >>> scores, ids = index.search(np.array([[1.0, 0.0]]), k=2, exclude=[np.array([10])])
        >>> ids.tolist(), scores.tolist()
        ([[12, 11]], [[0.5, 0.0]])
        >>> named = ExactIndex(dim=2)
        >>> named.add(np.array(["p1", "p2"]), np.array([[1, 0], [0, 1]]))
        >>> named.search(np.array([[0.0, 1.0]]), k=3)[1].tolist()
        [['p2', 'p1', None]]
    """

    def __init__(self, *, dim: int, score_budget_bytes: int = 256 * 2**20, id_type: IdType | str | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._dim = dim
        self.score_budget_bytes = score_budget_bytes
        self._map = IdMap(None if id_type is None else IdType(id_type))
        self._size = 0
        self._ids = np.empty(0, dtype=np.int64)  # (capacity,) int64 keys
        self._vectors = np.empty((0, dim), dtype=np.float32)  # (capacity, D)
        self._sorted_order: np.ndarray | None = None  # argsort of live ids, rebuilt on demand

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return self._size

    @property
    def id_type(self) -> IdType | None:
        return self._map.id_type

    @property
    def ids(self) -> np.ndarray:
        """``(N,)`` live ids as the caller gave them, in storage order."""
        return self._map.to_ids(self._keys)

    @property
    def _keys(self) -> np.ndarray:
        """``(N,)`` live int64 keys, in storage order (a view)."""
        return self._ids[: self._size]

    @property
    def vectors(self) -> np.ndarray:
        """``(N, D)`` live vectors, in the order of ``ids`` (a view)."""
        return self._vectors[: self._size]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = self._checked(ids, vectors)
        found, _ = self._locate(keys)
        if found.any():
            raise ValueError(f"ids already indexed (use upsert to replace): {self._map.to_ids(keys[found][:10]).tolist()}")
        self._append(keys, vectors)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        keys, vectors = self._checked(ids, vectors)
        found, rows = self._locate(keys)
        self._vectors[rows[found]] = vectors[found]  # replace in place
        self._append(keys[~found], vectors[~found])

    def delete(self, ids: np.ndarray) -> None:
        found, rows = self.locate(ids)
        if not found.any():
            return
        keep = np.ones(self._size, dtype=bool)
        keep[rows[found]] = False
        n_keep = int(keep.sum())
        self._ids[:n_keep] = self._keys[keep]
        self._vectors[:n_keep] = self.vectors[keep]
        self._size = n_keep
        self._sorted_order = None

    def _checked(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` int64 keys of unique ids (new strings get keys) and ``(N, D)`` vectors."""
        ids, vectors = self._map.check(ids), as_vectors(vectors, self._dim)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids but {vectors.shape[0]} vectors")
        return self._map.keys_for(ids, add=True), vectors

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Storage rows of ids: found ``(M,)`` bool and rows ``(M,)`` int64 (valid where found)."""
        if self._map.id_type is None:  # nothing added yet
            return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
        return self._locate(self._map.keys_for(ids, add=False))

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        live = self._keys
        if self._sorted_order is None:
            self._sorted_order = np.argsort(live, kind="stable")
        if live.size == 0:
            return np.zeros(ids.shape, dtype=bool), np.zeros(ids.shape, dtype=np.int64)
        sorted_ids = live[self._sorted_order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), live.size - 1)
        found = sorted_ids[pos] == ids
        return found, self._sorted_order[pos]

    def _append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        needed = self._size + ids.shape[0]
        if needed > self._ids.shape[0]:  # grow geometrically: amortised O(1) per added row
            capacity = max(needed, 2 * self._ids.shape[0], 1024)
            self._ids = np.concatenate([self._keys, np.empty(capacity - self._size, np.int64)])
            grown = np.empty((capacity, self._dim), dtype=np.float32)
            grown[: self._size] = self.vectors
            self._vectors = grown
        self._ids[self._size : needed] = ids
        self._vectors[self._size : needed] = vectors
        self._size = needed
        self._sorted_order = None

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_queries, n_items = queries.shape[0], self._size
        scores, ids = empty_results(n_queries, k)  # (Q, K) each, int64 keys, filled below
        if n_items == 0:
            return scores, self._map.to_ids(ids)
        top = min(k, n_items)
        items = torch.from_numpy(self.vectors)  # (N, D), shares memory
        live_ids = torch.from_numpy(self._keys)  # (N,)
        chunk = max(1, self.score_budget_bytes // (4 * n_items))
        with torch.inference_mode():
            for start in range(0, n_queries, chunk):
                block = torch.from_numpy(queries[start : start + chunk])  # (C, D)
                values, rows = torch.topk(block @ items.T, top, dim=1)  # (C, top)
                scores[start : start + chunk, :top] = values.numpy()
                ids[start : start + chunk, :top] = live_ids[rows].numpy()
        return scores, self._map.to_ids(ids)

    def save(self, path: str | os.PathLike) -> None:
        """Keys, vectors and (string ids) the id strings, replaced together (``write_index_files``)."""
        files = {"ids": (".npy", npy_writer(self._keys)), "vectors": (".npy", npy_writer(self.vectors))}
        if self.id_type is IdType.STR:
            files["id_strings"] = (".npy", npy_writer(self._map.strings))
        id_type = None if self.id_type is None else self.id_type.value
        write_index_files(path, self.backend, {"dim": self._dim, "id_type": id_type}, files)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExactIndex":
        path = Path(path)
        manifest = read_manifest(path)
        index = cls(dim=manifest["dim"], id_type=manifest.get("id_type", "int"))  # older saves: int ids
        if index.id_type is IdType.STR:
            index._map = IdMap(IdType.STR, load_npy(index_file(path, manifest, "id_strings", "id_strings.npy")))
        index._append(load_npy(index_file(path, manifest, "ids", "ids.npy")), load_npy(index_file(path, manifest, "vectors", "vectors.npy")))
        return index
