"""Keyed feature tables for serving: rows looked up by id a column at a time, nulls when unknown.

Shape legend: B looked-up keys, N stored rows.

>>> import pyarrow as pa
>>> table = FeatureTable(pa.table({"user_id": [3, 1], "age": [30, 20]}), key="user_id")
>>> table.lookup([1, 7], ["age"]).column("age").to_pylist()
[20, None]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.sources import DataSource


class FeatureTable:
    """One row per key; ``lookup`` returns the rows of any keys (null rows for unknown keys)."""

    def __init__(self, table: pa.Table, *, key: str) -> None:
        self.key = key
        self.table = table.combine_chunks()
        self.keys = np.asarray(self.table.column(key).to_numpy(zero_copy_only=False))  # (N,)
        if len(np.unique(self.keys)) != len(self.keys):
            raise ValueError(f"the key column {key!r} has duplicate values")
        self._order = np.argsort(self.keys, kind="stable")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    def positions(self, keys: Sequence[Any] | np.ndarray) -> np.ndarray:
        """``(B,)`` int64 row of each key, -1 where unknown."""
        keys = np.asarray(keys)
        if len(self.keys) == 0 or len(keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        try:
            where = np.searchsorted(self.keys, keys, sorter=self._order)
        except TypeError:  # keys of another type (a string for an int key) match nothing
            return np.full(len(keys), -1, dtype=np.int64)
        where = np.minimum(where, len(self.keys) - 1)
        rows = self._order[where]
        return np.where(self.keys[rows] == keys, rows, -1).astype(np.int64)

    def lookup(self, keys: Sequence[Any] | np.ndarray, columns: Sequence[str]) -> pa.Table:
        """The ``columns`` of each key's row, ``(B,)`` each; all-null where the key is unknown."""
        rows = self.positions(keys)
        return self.take(rows, columns)

    def take(self, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        indices = pa.array(rows, mask=rows < 0, type=pa.int64())
        return self.table.select(list(columns)).take(indices)

    def merged(self, other: "FeatureTable") -> "FeatureTable":
        """This table with ``other``'s extra columns joined on the key (left join)."""
        extra = [c for c in other.columns if c not in self.columns]
        if not extra:
            return self
        joined = other.lookup(self.keys, extra)
        table = self.table
        for name in extra:
            table = table.append_column(name, joined.column(name))
        return FeatureTable(table, key=self.key)


def read_table(source: DataSource, columns: Sequence[str] | None = None) -> pa.Table:
    tables = [pa.Table.from_batches([chunk.records]) for chunk in source.chunks(columns=list(columns) if columns else None)]
    return pa.concat_tables(tables).combine_chunks() if tables else pa.table({})


def latest_rows(table: pa.Table, *, key: str, columns: Sequence[str], time_column: str | None) -> FeatureTable:
    """The last row per key (by ``time_column``, else file order) of ``columns``: the latest
    known aggregates of each user or item."""
    keys = table.column(key).to_numpy(zero_copy_only=False)
    order = np.arange(len(keys))
    if time_column and time_column in table.column_names:
        order = np.lexsort((order, table.column(time_column).to_numpy(zero_copy_only=False)))
    # the last occurrence of each key in time order
    reversed_order = order[::-1]
    _, first = np.unique(keys[reversed_order], return_index=True)
    rows = reversed_order[first]
    return FeatureTable(table.select([key, *columns]).take(pa.array(rows)), key=key)


class Histories:
    """Each user's last ``maxlen`` positive items, oldest first, from an interaction table."""

    def __init__(self, users: np.ndarray, items: np.ndarray, *, maxlen: int = 50) -> None:
        order = np.argsort(users, kind="stable")  # input is in time order; keep it within a user
        users, items = users[order], items[order]
        keys, starts, counts = np.unique(users, return_index=True, return_counts=True)
        self._table = FeatureTable(pa.table({"user": keys}), key="user")
        self._lists = [items[s + max(0, c - maxlen) : s + c] for s, c in zip(starts, counts)]
        self.item_counts = _counts(items)

    @classmethod
    def from_source(cls, source: DataSource, *, user_column: str = "user_id", item_column: str = "item_id", time_column: str = "timestamp", label_column: str | None = "label", maxlen: int = 50) -> "Histories":
        names = set(source.columns_of(source.files()[0]))
        columns = [user_column, item_column] + [c for c in (time_column, label_column) if c and c in names]
        table = read_table(source, columns)
        if label_column and label_column in names:  # keep positives only
            table = table.filter(pc.fill_null(pc.greater(table.column(label_column), 0), False))
        users = table.column(user_column).to_numpy(zero_copy_only=False)
        items = table.column(item_column).to_numpy(zero_copy_only=False)
        if time_column and time_column in names:
            order = np.argsort(table.column(time_column).to_numpy(zero_copy_only=False), kind="stable")
            users, items = users[order], items[order]
        return cls(users, items, maxlen=maxlen)

    def get(self, user: Any) -> np.ndarray | None:
        row = int(self._table.positions([user])[0]) if user is not None else -1
        return self._lists[row] if row >= 0 else None

    def popular(self) -> tuple[np.ndarray, np.ndarray]:
        """Item ids by descending training count, and each one's share of all interactions."""
        ids, counts = self.item_counts
        order = np.lexsort((ids, -counts))
        return ids[order], counts[order] / max(1, counts.sum())


def _counts(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(items, return_counts=True)
    return ids, counts
