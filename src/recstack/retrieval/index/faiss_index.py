"""Faiss inner-product indexes (flat, HNSW, IVF) keyed by the caller's int64 ids.

Shape legend: Q queries, N indexed vectors, D dim, K top-k.

How ids and deletes work per kind, and why:

* flat: ``IndexIDMap2(IndexFlatIP)``. ``remove_ids`` is supported and exact.
* hnsw: ``IndexIDMap2(IndexHNSWFlat)``. HNSW graphs cannot remove nodes, so ``delete`` and an
  ``upsert`` that replaces ids rebuild the graph from the vectors the index already stores
  (``reconstruct_n``): correct, but O(N log N) per call, so batch your deletes.
* ivf: ``IndexIVFFlat`` with its own ids (``add_with_ids``) and a hashtable direct map.
  Not wrapped in ``IndexIDMap``: removing from an ``IndexIDMap`` over IVF leaves the inverted
  lists' internal labels stale, so later searches return the neighbour's id.
  IVF trains its coarse quantiser on the vectors of the first ``add``/``upsert``; add the bulk
  of the data in that call.

faiss is imported when an index is built, so ``recstack`` imports without it.
"""

from __future__ import annotations

import math
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recstack.retrieval.index.base import (
    VectorIndex,
    as_ids,
    atomic_save_npy,
    atomic_replace,
    empty_results,
    check_pairs,
    load_npy,
    read_manifest,
    register_index,
    write_manifest,
)

if TYPE_CHECKING:
    import faiss

# k-means wants ~39 training points per centroid; below that faiss warns and centroids are poor
MIN_POINTS_PER_CENTROID = 39


class FaissKind(str, Enum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "FaissIndex needs faiss; install it with: pip install 'recstack[vectors]'"
        ) from err
    return faiss


@register_index("faiss")
class FaissIndex(VectorIndex):
    """Approximate (or, for ``kind="flat"``, exact) inner-product search with faiss.

    Threads: faiss uses OpenMP; set them with ``faiss.omp_set_num_threads``.

    Args:
        dim: D, the vector dimension.
        kind: "flat" (exact), "hnsw" (graph) or "ivf" (inverted lists).
        hnsw_m: HNSW neighbours per node; more = better recall, more memory.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (faiss uses at least K).
        nlist: IVF lists. None picks ``4 * sqrt(N)`` at training time, capped so every
            centroid has ``MIN_POINTS_PER_CENTROID`` training vectors (1 list = exact).
        nprobe: IVF lists scanned per query.

    Example:
        >>> index = FaissIndex(dim=2, kind="flat")
        >>> index.add(np.array([10, 11]), np.array([[1, 0], [0, 1]]))
        >>> index.search(np.array([[1.0, 0.0]]), k=3)[1].tolist()
        [[10, 11, -1]]
    """

    def __init__(
        self,
        *,
        dim: int,
        kind: FaissKind | str = FaissKind.FLAT,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._faiss = import_faiss()
        self._dim = dim
        self.kind = FaissKind(kind)
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self.nlist = nlist
        self._nprobe = nprobe
        self._ids = np.empty(0, dtype=np.int64)  # live ids (for flat/hnsw: faiss's internal order)
        self._index: faiss.Index | None = None if self.kind is FaissKind.IVF else self._new_index()

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._ids.size)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = value
        self._apply_search_params()

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = value
        self._apply_search_params()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_pairs(ids, vectors, self._dim)
        present = np.isin(ids, self._ids)
        if present.any():
            raise ValueError(f"ids already indexed (use upsert to replace): {ids[present][:10].tolist()}")
        self._add(ids, vectors)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_pairs(ids, vectors, self._dim)
        present = np.isin(ids, self._ids)
        if present.any() and self.kind is FaissKind.HNSW:
            keep = ~np.isin(self._ids, ids)
            old_ids, old_vectors = self._ids[keep], self._stored_vectors()[keep]
            self._rebuild(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors]))
            return
        if present.any():
            self._remove(ids[present])
        self._add(ids, vectors)

    def delete(self, ids: np.ndarray) -> None:
        ids = as_ids(ids, unique=False)
        doomed = np.isin(self._ids, ids)
        if not doomed.any():
            return
        if self.kind is FaissKind.HNSW:  # no remove_ids for graphs: rebuild from stored vectors
            keep = ~doomed
            self._rebuild(self._ids[keep], self._stored_vectors()[keep])
        else:
            self._remove(self._ids[doomed])

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if ids.size == 0:
            return
        if self._index is None:  # IVF: train on the first batch
            self._index = self._new_ivf(vectors)
        self._index.add_with_ids(vectors, ids)
        self._ids = np.concatenate([self._ids, ids])

    def _remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(ids)  # flat/IDMap2 compacts keeping order, like the mask below
        self._ids = self._ids[~np.isin(self._ids, ids)]

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index = self._new_index()
        self._ids = np.empty(0, dtype=np.int64)
        self._add(ids, vectors)

    def _stored_vectors(self) -> np.ndarray:
        """``(N, D)`` vectors in the order of ``self._ids`` (flat and HNSW store them raw)."""
        inner = self._faiss.downcast_index(self._index.index)
        return inner.reconstruct_n(0, inner.ntotal)

    def _new_index(self) -> "faiss.Index":
        faiss = self._faiss
        if self.kind is FaissKind.FLAT:
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        if self.kind is FaissKind.HNSW:
            graph = faiss.IndexHNSWFlat(self._dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = self.ef_construction
            graph.hnsw.efSearch = self._ef_search
            return faiss.IndexIDMap2(graph)
        return None  # IVF is created when it can be trained

    def _new_ivf(self, vectors: np.ndarray) -> "faiss.Index":
        faiss = self._faiss
        n = vectors.shape[0]
        if self.nlist is None:
            self.nlist = max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))
        elif n < self.nlist * MIN_POINTS_PER_CENTROID:
            raise ValueError(
                f"IVF with nlist={self.nlist} needs at least {self.nlist * MIN_POINTS_PER_CENTROID} "
                f"vectors in its first add to train, got {n}: add more at once, lower nlist, "
                "leave nlist=None to size it from the data, or use kind='flat'"
            )
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self._dim), self._dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # lets remove_ids find any id
        ivf.nprobe = self._nprobe
        return ivf

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:  # untrained IVF holds nothing
            return empty_results(queries.shape[0], k)
        scores, ids = self._index.search(queries, k)  # (Q, K) each; missing: id -1, score -FLT_MAX
        return scores, ids

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if self._index is not None:
            atomic_replace(path / "index.faiss", lambda tmp: self._faiss.write_index(self._index, tmp))
        atomic_save_npy(path / "ids.npy", self._ids)
        config = {
            "dim": self._dim,
            "kind": self.kind.value,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "trained": self._index is not None,
        }
        write_manifest(path, self.backend, config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaissIndex":
        path = Path(path)
        config = read_manifest(path)
        trained = config.pop("trained")
        for key in ("backend", "format_version"):
            config.pop(key)
        index = cls(**config)
        index._ids = load_npy(path / "ids.npy")
        if trained:
            index._index = index._faiss.read_index(str(path / "index.faiss"))
            index._apply_search_params()
        return index

    def _apply_search_params(self) -> None:
        """faiss keeps search knobs on the index object; push ours there."""
        if self._index is None:
            return
        if self.kind is FaissKind.HNSW:
            self._faiss.downcast_index(self._index.index).hnsw.efSearch = self._ef_search
        elif self.kind is FaissKind.IVF:
            self._index.nprobe = self._nprobe
