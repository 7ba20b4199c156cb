"""Column helpers shared by the builders: joins by id, list lookups, first elements."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def take_by_key(keys: pa.Array | pa.ChunkedArray, table: pa.Table, key: str) -> pa.Table:
    """Rows of ``table`` whose ``key`` equals each of ``keys`` (null rows where none does)."""
    positions = pc.index_in(keys, value_set=table[key].combine_chunks())
    return table.take(positions)


def attach(rows: pa.Table, features: pa.Table, key: str) -> pa.Table:
    """Append every column of ``features`` except ``key`` to ``rows``, joined on ``key``."""
    matched = take_by_key(rows[key], features, key)
    for name in features.column_names:
        if name != key:
            rows = rows.append_column(name, matched[name])
    return rows


def lookup_values(lists: pa.ListArray, table: pa.Table, key: str, value: str) -> pa.ListArray:
    """Replace each list element (a ``key``) by ``table[value]`` of its row; same offsets."""
    lists = _as_list_array(lists)
    positions = pc.index_in(lists.flatten(), value_set=table[key].combine_chunks())
    mapped = table[value].combine_chunks().take(positions)
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    return pa.ListArray.from_arrays(offsets, mapped)


def first_element(lists: pa.ListArray | pa.ChunkedArray) -> pa.Array:
    """The first element of each list, null for empty or null lists."""
    lists = _as_list_array(lists)
    offsets = lists.offsets.to_numpy()
    lengths = np.diff(offsets)
    starts = np.where(lengths > 0, offsets[:-1], 0)
    firsts = lists.values.take(pa.array(starts)) if len(lists.values) else pa.nulls(len(lists), lists.type.value_type)
    return pc.if_else(pa.array(lengths > 0), firsts, pa.scalar(None, lists.type.value_type))


def with_features(rows: pa.Table, users: pa.Table, items: pa.Table) -> pa.Table:
    """Append user features, item features and ``hist_genres`` (aligned with ``hist_item_ids``)."""
    rows = attach(attach(rows, users, "user_id"), items, "item_id")
    hist_genres = lookup_values(rows["hist_item_ids"].combine_chunks(), items, "item_id", "genre")
    return rows.append_column("hist_genres", hist_genres)


def _as_list_array(lists: pa.ListArray | pa.ChunkedArray) -> pa.ListArray:
    return lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
