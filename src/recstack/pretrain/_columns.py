"""A few named columns of a CSV / TSV / Parquet file (or glob), read with recstack's DataSource."""

from __future__ import annotations

import os
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.sources import DataSource


def read_columns(path: str | os.PathLike[str], columns: Sequence[str], *, id_columns: Sequence[str] = ()) -> pa.Table:
    """``columns`` of every file ``path`` names, as one table.

    ``id_columns`` are read from CSV as text, as the preprocessor reads ids (``"007"`` stays
    ``"007"``); Parquet columns keep their stored type. Missing columns, empty files and bad
    rows raise :class:`~recstack.errors.DataError` naming the file (and row).
    """
    source = DataSource.from_config(os.fspath(path))
    chunks = source.chunks(columns=list(columns), types={column: pa.string() for column in id_columns})
    return pa.Table.from_batches([chunk.records.select(list(columns)) for chunk in chunks])


def present(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Bool mask of values that are neither null nor the empty string (CSV's missing value)."""
    valid = pc.is_valid(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        valid = pc.and_(valid, pc.fill_null(pc.not_equal(column, ""), False))
    return valid
