"""Pretrained vectors keyed by string id, with a vectorised id lookup.

Shape legend: N vectors in the table, K looked-up ids, D vector dim.

Ids are always strings, so a table matches a categorical vocabulary whatever the source
file stored (``7`` and ``"7"`` are the same item)::

    table = VectorTable(ids=["7", "3"], vectors=np.eye(2, dtype=np.float32))
    vectors, found = table.lookup([3, "9"])   # (2, 2), [True, False]; unknown ids give zeros
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.errors import DataError

IdArray = Union[Sequence[Union[str, int]], np.ndarray, pa.Array, pa.ChunkedArray]


class DuplicateIdError(ValueError):
    """Two rows of a vector table carry the same id; ``rows`` are 0-based, in file order."""

    def __init__(self, id_: str, rows: tuple[int, int]) -> None:
        self.id = id_
        self.rows = rows
        super().__init__(f"duplicate id {id_!r} at rows {rows[0]} and {rows[1]} (0-based)")


@dataclass(frozen=True, eq=False)
class VectorTable:
    """One vector per id.

    Attributes:
        ids: ``N`` unique string ids, in row order (treat as read-only: the lookup index is
            built from them once, at construction).
        vectors: ``(N, D)`` float32, C-contiguous; row ``i`` belongs to ``ids[i]``.

    Example:
        >>> table = VectorTable(ids=["a", "b"], vectors=np.array([[1, 0], [0, 1]]))
        >>> table.dim, len(table)
        (2, 2)
        >>> vectors, found = table.lookup(["b", "zzz"])
        >>> vectors.tolist(), found.tolist()
        ([[0.0, 1.0], [0.0, 0.0]], [True, False])
    """

    ids: list[str]
    vectors: np.ndarray
    # Sorted ids and the row of each, for np.searchsorted lookups (built once).
    _sorted_ids: np.ndarray = field(init=False, repr=False)
    _sorted_rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (N, D), got shape {vectors.shape}")
        ids = _as_strings(self.ids)[0]
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids but {vectors.shape[0]} vectors")
        sorted_ids, order = _sorted_unique(ids)
        object.__setattr__(self, "ids", ids.tolist())
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "_sorted_ids", sorted_ids)
        object.__setattr__(self, "_sorted_rows", order.astype(np.int64))

    @property
    def dim(self) -> int:
        """``D``, the vector dim."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VectorTable(len={len(self)}, dim={self.dim})"

    def rows(self, ids: IdArray) -> np.ndarray:
        """``(K,)`` int64 row of each id, ``-1`` where the table has no such id (or the id is null)."""
        queries, valid = _as_strings(ids)
        if queries.size == 0 or self._sorted_ids.size == 0:
            return np.full(queries.shape[0], -1, dtype=np.int64)
        position = np.searchsorted(self._sorted_ids, queries)  # (K,)
        position[position == self._sorted_ids.size] = 0
        found = (self._sorted_ids[position] == queries) & valid
        return np.where(found, self._sorted_rows[position], -1)

    def lookup(self, ids: IdArray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of ``ids``: ``(K, D)`` float32 (zeros where unknown) and ``(K,)`` bool found."""
        rows = self.rows(ids)
        found = rows >= 0
        vectors = np.zeros((rows.shape[0], self.dim), dtype=np.float32)
        vectors[found] = self.vectors[rows[found]]
        return vectors, found


def check_unique(ids: IdArray) -> None:
    """Raise :class:`DuplicateIdError` for the repeated id whose second row comes first."""
    _sorted_unique(_as_strings(ids)[0])


def _sorted_unique(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted ids, order)`` with ``ids[order] == sorted ids``; raises on a repeated id."""
    order = np.argsort(ids, kind="stable")  # stable: a duplicate's second row comes second
    sorted_ids = ids[order]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if repeated.size:
        second = order[repeated + 1]
        at = int(np.argmin(second))
        raise DuplicateIdError(str(sorted_ids[repeated[at]]), (int(order[repeated[at]]), int(second[at])))
    return sorted_ids, order


def _as_strings(ids: IdArray) -> tuple[np.ndarray, np.ndarray]:
    """A NumPy unicode array of ``ids`` and a ``(K,)`` bool mask of non-null entries."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        valid = np.asarray(pc.is_valid(ids), dtype=bool)
        strings = pc.fill_null(pc.cast(ids, pa.string()), "").to_numpy(zero_copy_only=False)
        return strings.astype(str), valid
    array = np.asarray(ids)
    if array.ndim != 1:
        array = array.reshape(-1) if array.size else np.zeros(0, dtype=str)
    if array.dtype.kind == "U":
        return array, np.ones(array.shape[0], dtype=bool)
    if array.dtype == object:
        valid = np.asarray(array != None, dtype=bool)  # noqa: E711 (elementwise on object arrays)
        return np.where(valid, array, "").astype(str), valid
    return array.astype(str), np.ones(array.shape[0], dtype=bool)


def from_arrow(ids: pa.Array, lists: pa.Array, *, path: str) -> VectorTable:
    """A table from an Arrow id column (strings or integers) and a list-of-numbers column, as
    a Parquet or JSON-lines vector file holds them; a :class:`DataError` names ``path``, the
    1-based row and the column of the first problem."""
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise DataError(f"ids must be strings or integers, got Arrow type {ids.type}", path=path, column="id")
    value_type = getattr(lists.type, "value_type", None)
    if value_type is None or not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise DataError(f"expected a list of floats, got Arrow type {lists.type}", path=path, column="vector")
    for name, column in (("id", ids), ("vector", lists)):
        if column.null_count:
            row = int(np.flatnonzero(np.asarray(column.is_null()))[0]) + 1
            raise DataError(f"null {name}", path=path, row=row, column=name)
    if len(lists) == 0:
        raise DataError("empty file: no vectors", path=path)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)  # (N,)
    dim = int(lengths[0])
    wrong = np.flatnonzero(lengths != dim)
    if dim == 0 or wrong.size:
        row = int(wrong[0]) if wrong.size else 0
        problem = f"expected {dim or 'at least 1'} values, got {int(lengths[row])}"
        raise DataError(problem, path=path, row=row + 1, column="vector")
    values = pc.list_flatten(lists)  # (N * D,)
    if values.null_count:
        parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        row = int(parent[np.flatnonzero(np.asarray(values.is_null()))[0]]) + 1
        raise DataError("null value inside a vector", path=path, row=row, column="vector")
    vectors = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(lists), dim)
    try:
        return VectorTable(ids=ids, vectors=vectors)
    except DuplicateIdError as error:
        first, second = (row + 1 for row in error.rows)
        raise DataError(f"duplicate id {error.id!r} (first at row {first})", path=path, row=second, column="id") from None
