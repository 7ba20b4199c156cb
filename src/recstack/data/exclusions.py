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

__all__ = ["comparable", "entries_by_key", "exclusion_csr", "list_entries", "positions_in"]


def comparable(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both id arrays in one comparable dtype: as is when both are numbers or both text, else
    as text (ids read from a CSV as strings against integer ids from Parquet)."""
    left, right = np.asarray(left), np.asarray(right)
    kinds = left.dtype.kind + right.dtype.kind
    if all(kind in "iub" for kind in kinds):
        return left.astype(np.int64, copy=False), right.astype(np.int64, copy=False)
    if all(kind in "iubf" for kind in kinds):  # integer ids with a null read as float
        return left.astype(np.float64, copy=False), right.astype(np.float64, copy=False)
    return left.astype(str), right.astype(str)


def positions_in(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``(len(wanted),)`` index of each wanted id in ``ids`` (unique, any order), or -1."""
    ids, wanted = comparable(ids, wanted)
    if len(ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    where = np.minimum(np.searchsorted(ids, wanted, sorter=order), len(order) - 1)
    found = ids[order[where]] == wanted
    return np.where(found, order[where], -1).astype(np.int64)


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
