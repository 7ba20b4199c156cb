"""Held-out retrieval targets and what each evaluated row excludes, read from event files.

Per evaluated row: the catalogue index of its target item, and a CSR list of catalogue indices
removed from its ranking (the row's exclusion columns plus its user's seen items); see
:func:`held_out`. Every step is a column operation (``recstack.data.exclusions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from recstack.data.columns import Where
from recstack.data.exclusions import IdIndex, entries_by_key, exclusion_csr, list_entries
from recstack.data.sources import DataSource
from recstack.errors import DataError

__all__ = ["HISTORY_COLUMN", "HeldOut", "held_out"]


@dataclass(frozen=True)
class HeldOut:
    """Per evaluated row: the target's catalogue index and the catalogue indices to exclude."""

    user_ids: np.ndarray  # (U,)
    targets: np.ndarray  # (U,)
    exclude_indptr: np.ndarray  # (U + 1,)
    exclude_indices: np.ndarray
    rows: np.ndarray | None = None  # (U,) which rows of the split these are, in file order


HISTORY_COLUMN = "hist_item_ids"


def held_out(
    split: DataSource,
    seen: DataSource | None,
    catalog_ids: np.ndarray,
    *,
    user_column: str,
    item_column: str,
    seen_column: str = "seen_item_ids",
    history_column: str | None = HISTORY_COLUMN,
    exclude_columns: Sequence[str] | None = None,
    delimiter: str = ",",
) -> HeldOut:
    """Targets and exclusions of every evaluated row.

    Excluded from a row's ranking: the items listed in the row's ``exclude_columns`` (list
    columns or ``delimiter``-separated strings; by default the row's own history column, so the
    validation positive is not recommended again when scoring test) and the items its user saw
    (``seen``: a ``seen_column`` list per user, or one ``(user, item)`` pair per row, such as
    the training events). A row whose target is not in the catalogue cannot be ranked and is
    left out.
    """
    if exclude_columns is None:
        available = split.columns_of(split.files()[0])
        exclude_columns = (history_column,) if history_column and history_column in available else ()
    rows = _read(split, list(dict.fromkeys([user_column, item_column, *exclude_columns])))
    catalogue = IdIndex(catalog_ids)  # sorted once for the targets and every exclusion
    targets = catalogue.positions(rows.column(item_column).to_numpy(zero_copy_only=False))
    kept = np.flatnonzero(targets >= 0)  # (U,) a held-out item missing from the catalogue cannot be ranked
    users = rows.column(user_column).to_numpy(zero_copy_only=False)[kept]
    evaluated = np.full(rows.num_rows, -1, dtype=np.int64)  # split row -> evaluated row, or -1
    evaluated[kept] = np.arange(len(kept))
    owners: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for column in exclude_columns:
        where = Where(",".join(split.paths), 1, column, column)
        owner, values = list_entries(rows.column(column).combine_chunks(), delimiter=delimiter, where=where)
        owners.append(evaluated[owner])
        positions.append(catalogue.positions(values))
    if seen is not None:
        owner, values = _seen_entries(seen, users, user_column=user_column, item_column=item_column, seen_column=seen_column, delimiter=delimiter)
        owners.append(owner)
        positions.append(catalogue.positions(values))
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    position = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    indptr, indices = exclusion_csr(owner[owner >= 0], position[owner >= 0], len(kept))
    return HeldOut(users, targets[kept], indptr, indices, rows=kept)


def _seen_entries(
    seen: DataSource, users: np.ndarray, *, user_column: str, item_column: str, seen_column: str, delimiter: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(evaluated row, item id)`` of every item the evaluated rows' users saw."""
    path = seen.files()[0]
    available = seen.columns_of(path)
    if seen_column in available:  # one list per user
        table = _read(seen, [user_column, seen_column])
        where = Where(",".join(seen.paths), 1, seen_column, seen_column)
        owner, items = list_entries(table.column(seen_column).combine_chunks(), delimiter=delimiter, where=where)
        entry_users = table.column(user_column).to_numpy(zero_copy_only=False)[owner]
    elif item_column in available:  # one (user, item) pair per row: an event table
        table = _read(seen, [user_column, item_column])
        entry_users = table.column(user_column).to_numpy(zero_copy_only=False)
        items = table.column(item_column).to_numpy(zero_copy_only=False)
    else:
        raise DataError(
            f"a seen file needs a {seen_column!r} list per user or an {item_column!r} column (one item per row); "
            f"it has {available[:20]}",
            path=path,
        )
    return entries_by_key(entry_users, items, users)


def _read(source: DataSource, columns: list[str]) -> pa.Table:
    return pa.concat_tables(pa.Table.from_batches([c.records]) for c in source.chunks(columns=columns))
