"""Vectorised per-group history windows and leakage-free running aggregates.

Everything here works on arrays already sorted by ``(group key, timestamp)``; a row's
"strictly earlier" rows are the rows of its group before the first row that shares its
timestamp (ties are simultaneous, so neither sees the other)::

    #  sorted row   0   1   2   3   4        (one user)
    #  timestamp    5   7   7   9   9
    #  tie_start    0   1   1   3   3
    #  earlier      []  [0] [0] [0,1,2] [0,1,2]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class GroupIndex:
    """Row positions that bound each row's strictly earlier rows, in sorted order.

    Attributes:
        order: permutation that sorts the original rows by ``(key, timestamp)``, ``(N,)``.
        group_start: first sorted position of the row's group, ``(N,)``.
        tie_start: first sorted position of the row's ``(key, timestamp)`` tie group, ``(N,)``;
            the strictly earlier rows of sorted row ``i`` are ``group_start[i]:tie_start[i]``.
    """

    order: np.ndarray
    group_start: np.ndarray
    tie_start: np.ndarray

    @property
    def earlier_count(self) -> np.ndarray:
        """Number of strictly earlier rows in the same group, ``(N,)`` int64."""
        return self.tie_start - self.group_start


def group_index(keys: np.ndarray, timestamps: np.ndarray, tiebreak: np.ndarray | None = None) -> GroupIndex:
    """Sort by ``(keys, timestamps[, tiebreak])`` and locate group and tie-group starts."""
    sort_keys = (timestamps, keys) if tiebreak is None else (tiebreak, timestamps, keys)
    order = np.lexsort(sort_keys)
    sorted_keys, sorted_ts = keys[order], timestamps[order]
    positions = np.arange(len(order), dtype=np.int64)
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
    new_tie = new_group.copy()
    new_tie[1:] |= sorted_ts[1:] != sorted_ts[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0))
    tie_start = np.maximum.accumulate(np.where(new_tie, positions, 0))
    return GroupIndex(order=order, group_start=group_start, tie_start=tie_start)


def window_positions(start: np.ndarray, stop: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and gathered positions of the windows ``[max(start, stop - max_len), stop)``.

    Returns:
        offsets ``(N + 1,)`` int32 and positions ``(sum of lengths,)`` int64, oldest first.
    """
    lengths = np.minimum(stop - start, max_len).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    # position k of row r is (stop_r - len_r) + (k - offsets_r): one repeat, no per-row loop
    within = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    positions = np.repeat(stop - lengths, lengths) + within
    return offsets.astype(np.int32), positions


def window_lists(values: pa.Array, start: np.ndarray, stop: np.ndarray, max_len: int) -> pa.ListArray:
    """``values[max(start, stop - max_len):stop]`` for every row, as an Arrow list column."""
    offsets, positions = window_positions(start, stop, max_len)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values.take(pa.array(positions)))


def earlier_sums(values: np.ndarray, index: GroupIndex) -> np.ndarray:
    """Sum of ``values`` (in sorted order) over each row's strictly earlier rows, ``(N,)``."""
    cumulative = np.zeros(len(values) + 1, dtype=np.float64)
    np.cumsum(values, out=cumulative[1:])
    return cumulative[index.tie_start] - cumulative[index.group_start]


def smoothed(total: np.ndarray, count: np.ndarray, prior: float, strength: float) -> np.ndarray:
    """Additive smoothing toward ``prior``: ``(total + prior * m) / (count + m)``, float32."""
    return ((total + prior * strength) / (count + strength)).astype(np.float32)


def unsort(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Scatter values computed in sorted order back to the original row order."""
    out = np.empty_like(sorted_values)
    out[order] = sorted_values
    return out
