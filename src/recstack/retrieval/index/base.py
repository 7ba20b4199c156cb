"""The contract every vector index keeps, the backend registry, and atomic file writes.

Shape legend: Q queries, N indexed vectors, D vector dim, K top-k, E excluded ids per query.

Ids are the caller's: non-negative integers or strings (``ids.py``); results come back in the
same type, padded with -1 (ints) or None (strings).

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
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import numpy as np
import torch

from recstack.retrieval.index.ids import PAD_ID, IdMap, IdType, as_id_array, empty_ids, found_mask

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type["VectorIndex"]] = {}
IndexT = TypeVar("IndexT", bound=type["VectorIndex"])


class VectorIndex(ABC):
    """Top-k inner-product search over vectors keyed by the caller's ids (ints >= 0 or strings).

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

    @property
    def id_type(self) -> IdType | None:
        """INT or STR once known (set by the first ``add`` or by the constructor), else None."""
        return None

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index new vectors. ids ``(N,)`` ints or strings, unique and not yet present; vectors
        ``(N, D)``."""

    @abstractmethod
    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index vectors, replacing the vector of any id already present."""

    @abstractmethod
    def delete(self, ids: np.ndarray) -> None:
        """Remove ids; ids that are not present are ignored."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: queries ``(Q, D)`` float32 -> scores ``(Q, k)`` float32, ids ``(Q, k)``:
        int64 (-1 where missing) or an object array of str (None where missing).

        Rows are sorted by descending score; missing results may have any score. Must cope
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
            scores ``(Q, K)`` float32 (descending, -inf where padded) and ids ``(Q, K)`` in the
            index's id type: int64 (-1 where fewer than k results exist) or an object array of
            str (None there). ``ids.found_mask(ids)`` tells results from padding for both.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = as_vectors(queries, self.dim, name="queries")
        n_queries = queries.shape[0]
        widest = _check_exclusions(exclude, n_queries)  # E
        if n_queries == 0:
            return empty_results(n_queries, k, self.id_type)
        scores, ids = self._search(queries, k + widest)  # (Q, K + E)
        if ids.dtype != object:  # int ids: exclusions compared as they are
            excluded = _pad_exclusions(exclude, n_queries, lambda flat: _int_keys(flat, self.id_type))  # (Q, E)
            return drop_excluded(scores, ids, excluded, k)
        # string ids: number this result's strings, exclude by number, map the kept ones back
        local = IdMap(IdType.STR)
        found = found_mask(ids)
        keys = np.full(ids.shape, PAD_ID, dtype=np.int64)  # (Q, K + E)
        keys[found] = local.keys_for(ids[found], add=True)
        excluded = _pad_exclusions(exclude, n_queries, lambda flat: local.keys_for(flat, add=False))
        scores, keys = drop_excluded(scores, keys, excluded, k)
        return scores, local.to_ids(keys)


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
    return as_id_array(ids, IdType.INT, unique=unique)


def as_vectors(vectors: np.ndarray, dim: int, *, name: str = "vectors") -> np.ndarray:
    """``(N, D)`` C-contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {vectors.shape}")
    return vectors


def check_pairs(ids: np.ndarray, vectors: np.ndarray, dim: int, id_type: IdType | None = IdType.INT) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(N,)`` ids of ``id_type`` (None: either type) and ``(N, D)`` vectors."""
    ids, vectors = as_id_array(ids, id_type), as_vectors(vectors, dim)
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


def _check_exclusions(exclude: Sequence[np.ndarray] | None, n_queries: int) -> int:
    """E, the longest exclusion list (0 without any)."""
    if exclude is None:
        return 0
    if len(exclude) != n_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_queries} queries")
    return max((np.asarray(row).size for row in exclude), default=0)


def _pad_exclusions(exclude: Sequence[np.ndarray] | None, n_queries: int, to_keys: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """One row of excluded keys per query, -1 padded: ``(Q, E)`` int64.

    ``to_keys`` maps all rows' ids at once (``(M,)`` -> ``(M,)`` int64, -1 for ids that cannot
    be in the index, which then exclude nothing).
    """
    if exclude is None:
        return np.empty((n_queries, 0), dtype=np.int64)
    rows = [np.asarray(row).ravel() for row in exclude]
    lengths = np.array([row.size for row in rows], dtype=np.int64)
    table = np.full((n_queries, int(lengths.max(initial=0))), PAD_ID, dtype=np.int64)
    if table.size:
        flat = np.concatenate([row for row in rows if row.size])  # empty rows may have any dtype
        table[np.arange(table.shape[1]) < lengths[:, None]] = to_keys(flat)
    return table


def _int_keys(flat: np.ndarray, id_type: IdType | None) -> np.ndarray:
    """Excluded ids of an int-keyed (or still empty) index as int64 keys."""
    if id_type is None and flat.dtype.kind not in "iu":
        return np.full(flat.shape, PAD_ID, dtype=np.int64)  # an empty index holds no string id
    return as_id_array(flat, IdType.INT, unique=False)


def empty_results(n_queries: int, k: int, id_type: IdType | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All-padding results: scores ``(Q, K)`` -inf, ids ``(Q, K)`` -1 (or None for STR)."""
    return np.full((n_queries, k), -np.inf, dtype=np.float32), empty_ids((n_queries, k), id_type)


# --- files: manifest and atomic writes -------------------------------------------------------


def write_manifest(path: str | os.PathLike, backend: str, config: dict[str, Any]) -> None:
    """Write ``manifest.json`` (backend, format version, the backend's config). Write it last."""
    manifest = {"backend": backend, "format_version": FORMAT_VERSION, **config}
    text = json.dumps(manifest, indent=2).encode()
    atomic_write(Path(path) / MANIFEST_NAME, lambda f: f.write(text))


def write_index_files(
    path: str | os.PathLike,
    backend: str,
    config: dict[str, Any],
    files: Mapping[str, tuple[str, Callable[[str], Any]]],
) -> None:
    """Save an index's files so that a reader sees all old ones or all new ones.

    Each ``files[key] = (suffix, write_to)`` is written under a fresh name (``key-<token>
    suffix``); the manifest, replaced atomically last, names the set (``"files"``); files of
    the previous save are removed after. A crash mid-save leaves the previous manifest and
    its files intact (plus unreferenced new files).
    """
    path = Path(path)
    token = uuid.uuid4().hex[:12]
    old = _manifest_files(path)
    names = {}
    for key, (suffix, write_to) in files.items():
        names[key] = f"{key}-{token}{suffix}"
        atomic_replace(path / names[key], write_to)
    write_manifest(path, backend, {**config, "files": names})
    for stale in set(old.values()) - set(names.values()):
        (path / stale).unlink(missing_ok=True)


def index_file(path: str | os.PathLike, manifest: Mapping[str, Any], key: str, default: str) -> Path:
    """The file the manifest names for ``key`` (``default``: saves from before ``"files"``)."""
    return Path(path) / (manifest.get("files") or {}).get(key, default)


def npy_writer(array: np.ndarray) -> Callable[[str], None]:
    """``write_to(tmp)`` for ``write_index_files``: a plain ``.npy`` (never pickled)."""

    def write_to(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return write_to


def _manifest_files(path: Path) -> dict[str, str]:
    try:
        return dict(json.loads((path / MANIFEST_NAME).read_text()).get("files") or {})
    except (OSError, ValueError):
        return {}


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
