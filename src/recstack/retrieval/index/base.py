"""The contract every vector index keeps, the backend registry, and atomic file writes.

Shape legend: Q queries, N indexed vectors, D vector dim, K top-k, E excluded ids per query.

Similarity is the inner product; callers L2-normalise both sides for cosine. A search asks each
backend for ``K + E`` raw candidates (``_search``) and this module removes the excluded ids
and pads, so exclusion and padding behave the same on every backend::

    # query q, k=3, exclude[q] = [7]
    # raw candidates    ids [7, 2, 9, 5]      scores [.9, .8, .7, .6]     (K + E = 4)
    # after exclusion   ids [2, 9, 5]         scores [.8, .7, .6]
    # only 2 items      ids [2, 9, -1]        scores [.8, .7, -inf]       (padding)
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np
import torch

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
PAD_ID = -1

_REGISTRY: dict[str, type["VectorIndex"]] = {}
IndexT = TypeVar("IndexT", bound=type["VectorIndex"])


class VectorIndex(ABC):
    """Top-k inner-product search over vectors keyed by the caller's int64 ids (>= 0).

    ``add`` refuses ids that are already present; ``upsert`` replaces them. Subclasses implement
    the storage methods and ``_search``; ``search`` (exclusion, padding) is shared.
    """

    backend: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """D, the vector dimension."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of indexed vectors."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index new vectors. ids ``(N,)`` int64, unique and not yet present; vectors ``(N, D)``."""

    @abstractmethod
    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index vectors, replacing the vector of any id already present."""

    @abstractmethod
    def delete(self, ids: np.ndarray) -> None:
        """Remove ids; ids that are not present are ignored."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: queries ``(Q, D)`` float32 -> scores ``(Q, k)`` float32, ids ``(Q, k)`` int64.

        Missing results are id -1 (any score); rows are sorted by descending score. Must cope
        with an empty index (``search`` does not call ``len``, which is a query on Milvus).
        """

    @abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to the directory ``path`` (created), manifest last."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index that ``save`` wrote."""

    def close(self) -> None:
        """Release connections or servers; a no-op for in-memory indexes. Idempotent."""

    def __enter__(self) -> "VectorIndex":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product.

        Args:
            queries: ``(Q, D)`` float32.
            k: results per query, >= 1.
            exclude: optional, one array of ids per query that must not be returned
                (for example the items a user has already seen).

        Returns:
            scores ``(Q, K)`` float32 (descending, -inf where padded) and ids ``(Q, K)`` int64
            (-1 where fewer than k results exist).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = as_vectors(queries, self.dim, name="queries")
        n_queries = queries.shape[0]
        excluded = _pad_exclusions(exclude, n_queries)  # (Q, E)
        fetch = k + excluded.shape[1]
        if n_queries == 0:
            return empty_results(n_queries, k)
        scores, ids = self._search(queries, fetch)  # (Q, K + E)
        return drop_excluded(scores, ids, excluded, k)


# --- registry -------------------------------------------------------------------------------


def register_index(backend: str) -> Callable[[IndexT], IndexT]:
    """Class decorator: make ``create_index(backend, ...)`` and ``load_index`` find the class."""

    def decorate(cls: IndexT) -> IndexT:
        if backend in _REGISTRY:
            raise ValueError(f"index backend {backend!r} is already registered")
        cls.backend = backend
        _REGISTRY[backend] = cls
        return cls

    return decorate


def create_index(backend: str, *, dim: int, **options: Any) -> VectorIndex:
    """Build an empty index. ``options`` are the keyword arguments of the backend's class.

    >>> index = create_index("exact", dim=4)
    >>> len(index), index.dim
    (0, 4)
    """
    return _backend_class(backend)(dim=dim, **options)


def load_index(path: str | os.PathLike) -> VectorIndex:
    """Open whatever index was saved at ``path``, reading the backend from its manifest."""
    return _backend_class(read_manifest(path)["backend"]).load(path)


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def _backend_class(backend: str) -> type[VectorIndex]:
    try:
        return _REGISTRY[backend]
    except KeyError:
        raise ValueError(
            f"unknown index backend {backend!r}; known: {available_backends()}"
        ) from None


# --- validation and the shared exclusion step ------------------------------------------------


def as_ids(ids: np.ndarray | Sequence[int], *, unique: bool = True) -> np.ndarray:
    """``(N,)`` int64, non-negative (-1 is the padding id), unique unless told otherwise."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks padding in search results)")
    if unique and np.unique(ids).size != ids.size:
        raise ValueError("ids contain duplicates")
    return ids


def as_vectors(vectors: np.ndarray, dim: int, *, name: str = "vectors") -> np.ndarray:
    """``(N, D)`` C-contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {vectors.shape}")
    return vectors


def check_pairs(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = as_ids(ids), as_vectors(vectors, dim)
    if ids.shape[0] != vectors.shape[0]:
        raise ValueError(f"{ids.shape[0]} ids but {vectors.shape[0]} vectors")
    return ids, vectors


def drop_excluded(
    scores: np.ndarray, ids: np.ndarray, excluded: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove excluded and padding ids from sorted candidates, keep the first k, pad.

    Args:
        scores: ``(Q, C)`` candidate scores, each row descending.
        ids: ``(Q, C)`` candidate ids, -1 where missing.
        excluded: ``(Q, E)`` ids to drop per query, -1 padded.
        k: results to keep.
    """
    ids = np.asarray(ids, dtype=np.int64)
    dropped = ids == PAD_ID  # (Q, C)
    if excluded.shape[1]:
        # row-wise membership: binary search of each candidate in its own query's sorted list
        table = torch.from_numpy(np.sort(excluded, axis=1))  # (Q, E)
        candidates = torch.from_numpy(ids)  # (Q, C)
        pos = torch.searchsorted(table, candidates).clamp_(max=table.shape[1] - 1)
        dropped |= (table.gather(1, pos) == candidates).numpy()
    keep_order = np.argsort(dropped, axis=1, kind="stable")[:, :k]  # kept first, rank preserved
    if keep_order.shape[1] < k:  # fewer than k candidates at all
        extra = np.full((ids.shape[0], k - keep_order.shape[1]), -1, dtype=np.int64)
        keep_order = np.concatenate([keep_order, extra], axis=1)
    valid = keep_order >= 0
    keep_order = np.where(valid, keep_order, 0)
    valid &= ~np.take_along_axis(dropped, keep_order, axis=1)  # (Q, K)
    out_ids = np.where(valid, np.take_along_axis(ids, keep_order, axis=1), PAD_ID)
    out_scores = np.where(valid, np.take_along_axis(scores, keep_order, axis=1), -np.inf)
    return out_scores.astype(np.float32), out_ids.astype(np.int64)


def _pad_exclusions(exclude: Sequence[np.ndarray] | None, n_queries: int) -> np.ndarray:
    """One row of excluded ids per query, -1 padded: ``(Q, E)`` int64."""
    if exclude is None:
        return np.empty((n_queries, 0), dtype=np.int64)
    if len(exclude) != n_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_queries} queries")
    rows = [as_ids(np.asarray(row, dtype=np.int64).ravel(), unique=False) for row in exclude]
    lengths = np.array([row.size for row in rows], dtype=np.int64)
    table = np.full((n_queries, int(lengths.max(initial=0))), PAD_ID, dtype=np.int64)
    if table.size:
        table[np.arange(table.shape[1]) < lengths[:, None]] = np.concatenate(rows)
    return table


def empty_results(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), PAD_ID, dtype=np.int64),
    )


# --- files: manifest and atomic writes -------------------------------------------------------


def write_manifest(path: str | os.PathLike, backend: str, config: dict[str, Any]) -> None:
    """Write ``manifest.json`` (backend, format version, the backend's config). Write it last."""
    manifest = {"backend": backend, "format_version": FORMAT_VERSION, **config}
    text = json.dumps(manifest, indent=2).encode()
    atomic_write(Path(path) / MANIFEST_NAME, lambda f: f.write(text))


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {path}: not a saved vector index")
    manifest = json.loads(file.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported index format {manifest.get('format_version')} in {file}")
    return manifest


def atomic_replace(file: str | os.PathLike, write_to: Callable[[str], Any]) -> None:
    """Have ``write_to(temp_path)`` write a temp file in ``file``'s folder, then ``os.replace``
    it into place, so readers see the old file or the new one, never half of one."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(file: str | os.PathLike, write: Callable[[Any], Any]) -> None:
    """``atomic_replace`` for writers that take an open binary file."""

    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_replace(file, write_to)


def atomic_save_npy(file: str | os.PathLike, array: np.ndarray) -> None:
    atomic_write(file, lambda f: np.save(f, array, allow_pickle=False))


def load_npy(file: str | os.PathLike) -> np.ndarray:
    return np.load(file, allow_pickle=False)
