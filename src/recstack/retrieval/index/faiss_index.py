"""Faiss inner-product indexes (flat, HNSW, IVF) keyed by the caller's ids (ints or strings).

Shape legend: Q queries, N indexed vectors, D dim, K top-k.

faiss labels vectors with int64 only: int ids are those labels; string ids get labels from an
``IdMap`` (position in its array of strings), saved beside the index as a plain ``.npy`` and
replaced with it in one manifest swap (``write_index_files``), so the two never disagree.

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
        id_type: "int" or "str"; None takes the type of the first ids added.

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
        id_type: IdType | str | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._faiss = import_faiss()
        self._map = IdMap(None if id_type is None else IdType(id_type))
        self._dim = dim
        self.kind = FaissKind(kind)
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self.nlist = nlist
        self._nprobe = nprobe
        self._ids = np.empty(0, dtype=np.int64)  # live faiss labels (flat/hnsw: faiss's internal order)
        self._index: faiss.Index | None = None if self.kind is FaissKind.IVF else self._new_index()

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._ids.size)

    @property
    def id_type(self) -> IdType | None:
        return self._map.id_type

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
        ids, vectors = self._checked(ids, vectors)
        present = np.isin(ids, self._ids)
        if present.any():
            raise ValueError(f"ids already indexed (use upsert to replace): {self._map.to_ids(ids[present][:10]).tolist()}")
        self._add(ids, vectors)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = self._checked(ids, vectors)
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
        if self._map.id_type is None:  # nothing added yet
            return
        ids = self._map.keys_for(ids, add=False)
        doomed = np.isin(self._ids, ids)
        if not doomed.any():
            return
        if self.kind is FaissKind.HNSW:  # no remove_ids for graphs: rebuild from stored vectors
            keep = ~doomed
            self._rebuild(self._ids[keep], self._stored_vectors()[keep])
        else:
            self._remove(self._ids[doomed])

    def _checked(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` int64 labels of unique ids (new strings get labels) and ``(N, D)`` vectors."""
        ids, vectors = self._map.check(ids), as_vectors(vectors, self._dim)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids but {vectors.shape[0]} vectors")
        return self._map.keys_for(ids, add=True), vectors

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
            return empty_results(queries.shape[0], k, self.id_type)
        scores, labels = self._index.search(queries, k)  # (Q, K) each; missing: label -1, score -FLT_MAX
        return scores, self._map.to_ids(labels)

    def save(self, path: str | os.PathLike) -> None:
        """The faiss index, its labels and (string ids) the id strings, replaced together."""
        files = {"ids": (".npy", npy_writer(self._ids))}
        if self._index is not None:
            index = self._index
            files["index"] = (".faiss", lambda tmp: self._faiss.write_index(index, tmp))
        if self.id_type is IdType.STR:
            files["id_strings"] = (".npy", npy_writer(self._map.strings))
        config = {
            "dim": self._dim,
            "kind": self.kind.value,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "trained": self._index is not None,
            "id_type": None if self.id_type is None else self.id_type.value,
        }
        write_index_files(path, self.backend, config, files)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaissIndex":
        path = Path(path)
        manifest = read_manifest(path)
        config = dict(manifest)
        trained = config.pop("trained")
        for key in ("backend", "format_version", "files"):
            config.pop(key, None)
        config.setdefault("id_type", "int")  # saves from before string ids held ints
        index = cls(**config)
        if index.id_type is IdType.STR:
            index._map = IdMap(IdType.STR, load_npy(index_file(path, manifest, "id_strings", "id_strings.npy")))
        index._ids = load_npy(index_file(path, manifest, "ids", "ids.npy"))
        if trained:
            index._index = index._faiss.read_index(str(index_file(path, manifest, "index", "index.faiss")))
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
