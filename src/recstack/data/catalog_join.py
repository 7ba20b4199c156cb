"""Retrieval data as users have it: an event table plus an item catalogue, joined by item id.

An event row needs only the user columns and the id of its item; the item-tower columns are
looked up in the catalogue (one row per item) a chunk at a time, as read::

    #  events (user_id, target)     catalogue (item_id, genre)      rows the pipeline sees
    #  u1      i7                   i3   "c1"                       u1  i7  "c2"
    #  u2      i3                   i7   "c2"                       u2  i3  "c1"

    #  per chunk: positions = catalogue ids sorted once, searched   # (B,) binary searches
    #             item columns = catalogue.take(positions)           # no loop per row

The events' item-id column may have its own name (``task.target_column``); it is read as the
schema's item-id column, which is the catalogue's id column. Only columns the event file lacks
are joined, so a file that already carries the item features (the older layout) reads as is.

An event whose item id is not in the catalogue is a :class:`~recstack.errors.DataError`
naming the file, the row, the column and the id; with ``skip_bad_rows`` such rows are dropped
and counted like other bad rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from recstack.data.exclusions import IdIndex
from recstack.data.sources import Chunk, DataSource
from recstack.errors import DataError

__all__ = ["EventSource", "with_catalog"]


@dataclass(frozen=True)
class EventSource(DataSource):
    """A :class:`DataSource` of events whose missing item columns come from a catalogue.

    Args:
        catalog: the item catalogue, one row per item, keyed by ``item_column``.
        item_column: the schema's item-id column (the catalogue's key).
        target_column: the events' item-id column when it is named differently; read as
            ``item_column``.
        item_columns: the catalogue columns that may be joined (the item-side features' columns).

    ``columns_of`` reports the columns as the pipeline sees them (the target under
    ``item_column``, plus the joinable catalogue columns).
    """

    catalog: DataSource | None = None
    item_column: str = "item_id"
    target_column: str | None = None
    item_columns: tuple[str, ...] = ()
    _catalogues: dict = field(default_factory=dict, compare=False, repr=False)

    def raw_columns_of(self, path: str) -> list[str]:
        """Column names of one event file as stored."""
        return DataSource.columns_of(self, path)

    def columns_of(self, path: str) -> list[str]:
        raw = self.raw_columns_of(path)
        target = self._target(raw)
        renamed = [self.item_column if c == target else c for c in raw if not (target and c == self.item_column)]
        return renamed + [c for c in self._joinable() if c not in renamed]

    def _target(self, raw: Sequence[str]) -> str | None:
        """The raw column read as ``item_column``, when renamed."""
        target = self.target_column
        return target if target and target != self.item_column and target in raw else None

    def _joinable(self) -> list[str]:
        if self.catalog is None:
            return []
        return [c for c in self.item_columns if c != self.item_column]

    def _check_columns(self, path: str, columns: Sequence[str]) -> None:
        found = self.raw_columns_of(path)
        target = self.target_column
        if target and self.item_column in columns and target not in found and self.item_column not in found:
            raise DataError(
                f"the target column {self.target_column!r} (task.target_column) is missing; the file has {found[:20]}",
                path=path,
                column=self.target_column,
            )
        missing = [c for c in columns if c not in found]
        if missing:
            raise DataError(f"missing column(s) {missing}; the file has {found[:20]}", path=path, column=missing[0])

    def _file_chunks(
        self, path: str, columns: Sequence[str] | None, types: Mapping[str, pa.DataType], keep_group: Any = None
    ) -> Iterator[Chunk]:
        raw = self.raw_columns_of(path)
        target = self._target(raw)
        present = [self.item_column if c == target else c for c in raw if not (target and c == self.item_column)]
        wanted = list(present) if columns is None else list(columns)
        joined = [c for c in wanted if c not in present and c in self._joinable()]
        read = [c for c in wanted if c not in joined]
        if joined and self.item_column not in read:
            read.append(self.item_column)
        to_raw = {self.item_column: target} if target else {}
        raw_read = [to_raw.get(c, c) for c in read]
        raw_types = {to_raw.get(k, k): v for k, v in types.items()}
        catalogue = self._catalogue(tuple(joined), types) if joined else None
        for chunk in DataSource._file_chunks(self, path, raw_read, raw_types, keep_group):
            records = chunk.records
            if target:
                names = [self.item_column if n == target else n for n in records.schema.names]
                records = records.rename_columns(names)
            if catalogue is not None:
                records = self._join(Chunk(records, chunk.path, chunk.first_row), catalogue, id_column=target or self.item_column)
                if records is None:
                    continue
            yield Chunk(records.select(wanted), chunk.path, chunk.first_row)

    def _catalogue(self, columns: tuple[str, ...], types: Mapping[str, pa.DataType]) -> "_Catalogue":
        cached = self._catalogues.get(columns)
        if cached is None:
            cached = _Catalogue.read(self.catalog, self.item_column, columns, types)
            self._catalogues[columns] = cached
        return cached

    def _join(self, chunk: Chunk, catalogue: "_Catalogue", *, id_column: str) -> pa.RecordBatch | None:
        """The chunk with the catalogue's columns appended; None when every row was dropped.
        ``id_column`` is the file's name of the id column, for errors."""
        records = chunk.records
        positions = catalogue.index.positions(records.column(self.item_column).to_numpy(zero_copy_only=False))  # (B,)
        missing = positions < 0
        if missing.any():
            if not self.skip_bad_rows:
                row = int(np.flatnonzero(missing)[0])
                value = records.column(self.item_column)[row].as_py()
                problem = "the item id is missing" if value is None else f"item id {value!r} is not in the catalogue"
                raise DataError(
                    f"{problem} ({','.join(catalogue.paths)}); add it there, or set skip_bad_rows to drop such rows",
                    path=chunk.path,
                    row=chunk.first_row + row,
                    column=id_column,
                )
            self.skipped.extend([1] * int(missing.sum()))
            records, positions = records.filter(pa.array(~missing)), positions[~missing]
            if records.num_rows == 0:
                return None
        taken = catalogue.table.take(pa.array(positions))
        arrays = list(records.columns) + [taken.column(c).combine_chunks() for c in catalogue.columns]
        names = list(records.schema.names) + list(catalogue.columns)
        return pa.RecordBatch.from_arrays(arrays, names=names)


@dataclass(frozen=True)
class _Catalogue:
    """The catalogue's joinable columns, in memory, with its ids indexed for lookups."""

    table: pa.Table
    index: IdIndex
    columns: tuple[str, ...]
    paths: tuple[str, ...]

    @classmethod
    def read(cls, source: DataSource, item_column: str, columns: tuple[str, ...], types: Mapping[str, pa.DataType]) -> "_Catalogue":
        wanted = [item_column, *columns]
        read_types = {k: v for k, v in types.items() if k in wanted}
        chunks = [pa.Table.from_batches([c.records]) for c in source.chunks(columns=wanted, types=read_types)]
        table = pa.concat_tables(chunks).combine_chunks()
        if table.column(item_column).null_count:
            raise DataError(f"a catalogue row has no item id in column {item_column!r}", path=",".join(source.paths), column=item_column)
        ids = table.column(item_column).to_numpy()
        if len(np.unique(ids)) != len(ids):
            raise DataError(f"catalogue item ids in column {item_column!r} must be unique", path=",".join(source.paths), column=item_column)
        return cls(table=table.select(list(columns)), index=IdIndex(ids), columns=columns, paths=source.paths)


def with_catalog(
    source: DataSource | None,
    *,
    catalog: DataSource | None,
    item_column: str,
    target_column: str | None = None,
    item_columns: Sequence[str] = (),
) -> DataSource | None:
    """``source`` read as events joined with ``catalog`` (see the module docstring)."""
    if source is None:
        return None
    fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(DataSource) if f.name != "skipped"}
    return EventSource(
        **fields,
        catalog=catalog,
        item_column=item_column,
        target_column=target_column,
        item_columns=tuple(item_columns),
    )
