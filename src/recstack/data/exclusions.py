"""Vectorised id bookkeeping for retrieval evaluation: catalogue positions and exclusion lists.

Exclusions are gathered as *entries*, one ``(owner row, item id)`` pair per excluded item, from
list columns, delimited strings or one-item-per-row tables, then packed into the CSR arrays the
evaluator reads (``recstack.evaluation.retrieval_metrics``)::

    #  entries   owner [0, 0, 2, 0]   positions [4, 1, 7, 4]     (row 0 lists item 4 twice)
    #  CSR       indptr [0, 2, 2, 3]  indices [1, 4, 7]          (sorted, deduplicated per row)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recstack.data.columns import Where, split_values

__all__ = ["IdIndex", "comparable", "entries_by_key", "exclusion_csr", "list_entries", "positions_in"]


def _kind(array: np.ndarray) -> str:
    return "int" if array.dtype.kind in "iub" else "float" if array.dtype.kind == "f" else "str"


def _common(left: str, right: str) -> str:
    """Ids compare as integers, as floats (integer ids with a null read as float), else as text
    (ids read from a CSV as strings against integer ids from Parquet)."""
    if left == right:
        return left
    return "float" if {left, right} == {"int", "float"} else "str"


def _as_kind(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "int":
        return array.astype(np.int64, copy=False)
    if kind == "float":
        return array.astype(np.float64, copy=False)
    return array.astype(str)


def comparable(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both id arrays in one comparable dtype (see :func:`_common`)."""
    left, right = np.asarray(left), np.asarray(right)
    kind = _common(_kind(left), _kind(right))
    return _as_kind(left, kind), _as_kind(right, kind)


class IdIndex:
    """Positions of ids in a fixed array of unique ids: sorted once (per id type met), then
    one binary search per looked-up id.

    Example:
        >>> IdIndex(np.array([30, 10, 20])).positions(np.array(["20", "99", "30"])).tolist()
        [2, -1, 0]
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids)
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # kind -> (sorted ids, order)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, wanted: np.ndarray) -> np.ndarray:
        """``(len(wanted),)`` int64 index of each wanted id, or -1 where it is not there."""
        wanted = np.asarray(wanted)
        if len(self.ids) == 0:
            return np.full(len(wanted), -1, dtype=np.int64)
        kind = _common(_kind(self.ids), _kind(wanted))
        if kind not in self._sorted:
            ids = _as_kind(self.ids, kind)
            order = np.argsort(ids, kind="stable")
            self._sorted[kind] = (ids[order], order)
        sorted_ids, order = self._sorted[kind]
        wanted = _as_kind(wanted, kind)
        where = np.minimum(np.searchsorted(sorted_ids, wanted), len(order) - 1)
        found = sorted_ids[where] == wanted
        return np.where(found, order[where], -1).astype(np.int64)


def positions_in(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``(len(wanted),)`` index of each wanted id in ``ids`` (unique, any order), or -1."""
    return IdIndex(ids).positions(wanted)


def list_entries(column: pa.Array, *, delimiter: str, where: Where) -> tuple[np.ndarray, np.ndarray]:
    """Row index and value of every entry of a list column or a delimited string column."""
    jagged = split_values(column, delimiter, where)
    owner = np.repeat(np.arange(len(column), dtype=np.int64), jagged.lengths)
    return owner, jagged.values.to_numpy(zero_copy_only=False)


def entries_by_key(entry_keys: np.ndarray, entry_values: np.ndarray, row_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every entry given to every row with the same key (a many-to-many join by user id).

    Returns ``(owner rows, values)``: entry ``e`` appears once for each row whose key equals
    ``entry_keys[e]``; entries whose key no row has are dropped.
    """
    row_keys, entry_keys = comparable(row_keys, entry_keys)
    order = np.argsort(row_keys, kind="stable")
    sorted_keys = row_keys[order]
    low = np.searchsorted(sorted_keys, entry_keys, side="left")
    counts = np.searchsorted(sorted_keys, entry_keys, side="right") - low  # rows per entry
    entry = np.repeat(np.arange(len(entry_keys)), counts)
    offset = np.arange(len(entry)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[low[entry] + offset], np.asarray(entry_values)[entry]


def exclusion_csr(owner: np.ndarray, positions: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr (num_rows + 1,), indices)`` of the entries, sorted and deduplicated per row;
    entries with position -1 (not in the catalogue) are dropped."""
    keep = positions >= 0
    owner, positions = owner[keep], positions[keep]
    by_owner = np.lexsort((positions, owner))
    owner, positions = owner[by_owner], positions[by_owner]
    distinct = np.ones(len(owner), dtype=bool)
    distinct[1:] = (owner[1:] != owner[:-1]) | (positions[1:] != positions[:-1])
    owner, positions = owner[distinct], positions[distinct]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=num_rows))]).astype(np.int64)
    return indptr, positions.astype(np.int64)
