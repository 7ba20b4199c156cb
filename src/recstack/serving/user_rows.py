"""The user side of a batch of requests as one Arrow table: stored user columns with each
request's overrides, and history columns built from the history item ids.

Shape legend: B requests.

Example::

    rows = assemble_user_rows(requests, histories, users=user_table, items=catalogue.items,
                              columns=["user_id", "age", "hist_item_ids"], per_candidate={"item_id"})
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

import numpy as np
import pyarrow as pa

from recstack.serving.catalogue import HISTORY_COLUMNS
from recstack.serving.feature_table import FeatureTable
from recstack.serving.types import RecommendRequest, RequestError


def assemble_user_rows(
    requests: Sequence[RecommendRequest],
    histories: Sequence[np.ndarray],
    *,
    users: FeatureTable,
    items: FeatureTable,
    columns: Sequence[str],
    per_candidate: Collection[str],
) -> pa.Table:
    """B rows with every column of ``columns`` except ``per_candidate`` ones (item columns the
    ranker reads per candidate): history columns from ``histories``, the user id, stored user
    columns overridden by ``request.features``, and unknown columns as nulls (or the override).

    Raises ``RequestError`` naming the field when an override or id has the wrong type.
    """
    user_ids = [r.user_id for r in requests]
    rows = users.positions(np.asarray(user_ids, dtype=object) if any(u is None for u in user_ids) else user_ids)
    arrays: dict[str, pa.Array] = {}
    for name in columns:
        if name in HISTORY_COLUMNS:
            arrays[name] = history_column(histories, items, HISTORY_COLUMNS[name])
        elif name == users.key:
            arrays[name] = _with_type(user_ids, users.table.column(name).type, field="user_id")
        elif name in users.columns:
            stored = users.take(rows, [name]).column(name).combine_chunks()
            arrays[name] = _override(stored, requests, name)
        elif name in per_candidate:
            continue  # an item column of the ranker: filled per candidate
        else:
            arrays[name] = _override(pa.nulls(len(requests)), requests, name)
    return pa.table(arrays)


def history_column(histories: Sequence[np.ndarray], items: FeatureTable, catalogue_column: str | None) -> pa.Array:
    """A list column of B histories: the item ids themselves (``catalogue_column`` None) or each
    item's value of a catalogue column (its genre); items the catalogue lacks are left out."""
    lengths = np.array([len(h) for h in histories])
    flat = np.concatenate(histories) if len(histories) else np.zeros(0, np.int64)
    if catalogue_column is None:
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    rows = items.positions(flat)
    known = rows >= 0  # an unknown history item has no genre to list
    values = items.take(rows[known], [catalogue_column]).column(catalogue_column).combine_chunks()
    owner = np.repeat(np.arange(len(histories)), lengths)
    counts = np.bincount(owner[known], minlength=len(histories))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _override(stored: pa.Array, requests: Sequence[RecommendRequest], name: str) -> pa.Array:
    """``stored`` with the value of each request that sets ``features[name]``."""
    if not any(name in r.features for r in requests):
        return stored
    values = stored.to_pylist()
    for b, request in enumerate(requests):
        if name in request.features:
            values[b] = request.features[name]
    target = stored.type if not pa.types.is_null(stored.type) else None
    return _with_type(values, target, field=f"features.{name}")


def _with_type(values: list[Any], type_: pa.DataType | None, *, field: str) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        expected = f" (expected {type_})" if type_ is not None else ""
        raise RequestError(f"wrong value type{expected}", field=field) from None
