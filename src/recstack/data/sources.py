"""Streaming readers: CSV/TSV and Parquet files as Arrow record batches, shardable.

Only a block of each file is in memory at a time, so files larger than memory stream.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recstack.data.csv_stream import CsvStream, decode_utf8, delimiter_hint, read_header
from recstack.errors import ConfigError, DataError


class FileFormat(str, Enum):
    AUTO = "auto"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"


@dataclass(frozen=True)
class Chunk:
    """A record batch and where it came from (``first_row`` is the 1-based data row number)."""

    records: pa.RecordBatch
    path: str
    first_row: int


@dataclass(frozen=True)
class DataSource:
    """One file, a list of files or a glob, in one format.

    Args:
        paths: files or glob patterns, read in sorted order.
        format: csv, tsv or parquet; ``auto`` infers it from each file's suffix.
        delimiter: CSV field delimiter (default "," for csv and a tab for tsv).
        header: whether CSV files start with a header line.
        column_names: names for headerless CSV files (seed 000's ``label,u_1..u_128,i_1..i_128``).
        block_bytes: CSV bytes read per block; bounds memory.
        skip_bad_rows: skip (and count, in ``skipped``) rows with the wrong number of fields or
            bytes that are not UTF-8 text instead of failing.
    """

    paths: tuple[str, ...]
    format: FileFormat = FileFormat.AUTO
    delimiter: str | None = None
    header: bool = True
    column_names: tuple[str, ...] | None = None
    block_bytes: int = 4 << 20
    parquet_batch_rows: int = 65_536
    skip_bad_rows: bool = False
    skipped: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_config(cls, spec: Any, *, base_dir: Path | None = None, key: str = "data") -> "DataSource":
        """From a path, a list of paths, or a mapping with ``path(s)`` and reader options."""
        if isinstance(spec, (str, os.PathLike)):
            spec = {"paths": [str(spec)]}
        elif isinstance(spec, (list, tuple)):
            spec = {"paths": [str(p) for p in spec]}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{key}: expected a path, a list of paths or a mapping, got {spec!r}")
        spec = dict(spec)
        if "path" in spec:
            spec["paths"] = [spec.pop("path")]
        allowed = {"paths", "format", "delimiter", "header", "column_names", "block_bytes", "parquet_batch_rows", "skip_bad_rows"}
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if not spec.get("paths"):
            raise ConfigError(f"{key}.paths: at least one path is required")
        paths = [str(p) for p in (spec["paths"] if isinstance(spec["paths"], list) else [spec["paths"]])]
        if base_dir is not None:
            paths = [p if os.path.isabs(p) else str(base_dir / p) for p in paths]
        try:
            fmt = FileFormat(spec.get("format", "auto"))
        except ValueError:
            raise ConfigError(f"{key}.format: must be one of {[f.value for f in FileFormat]}, got {spec['format']!r}") from None
        names = spec.get("column_names")
        return cls(
            paths=tuple(paths),
            format=fmt,
            delimiter=spec.get("delimiter"),
            header=bool(spec.get("header", True)),
            column_names=tuple(names) if names else None,
            block_bytes=int(spec.get("block_bytes", 4 << 20)),
            parquet_batch_rows=int(spec.get("parquet_batch_rows", 65_536)),
            skip_bad_rows=bool(spec.get("skip_bad_rows", False)),
        )

    def files(self) -> list[str]:
        found: list[str] = []
        for pattern in self.paths:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for match in matches:
                if not os.path.isfile(match):
                    raise DataError("file not found", path=match)
            if not matches:
                raise DataError("no file matches this pattern", path=pattern)
            found.extend(matches)
        return found

    def format_of(self, path: str) -> FileFormat:
        if self.format is not FileFormat.AUTO:
            return self.format
        suffix = Path(path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return FileFormat.PARQUET
        if suffix in (".tsv", ".tab"):
            return FileFormat.TSV
        return FileFormat.CSV

    def columns_of(self, path: str) -> list[str]:
        """Column names of one file (the header, the given names, or the Parquet schema)."""
        if self.format_of(path) is FileFormat.PARQUET:
            return list(_open_parquet(path).schema_arrow.names)
        if self.column_names:
            return list(self.column_names)
        if os.path.getsize(path) == 0:
            raise DataError("file is empty", path=path)
        return read_header(path, self._delimiter(path), header=self.header)

    def chunks(
        self,
        *,
        columns: Sequence[str] | None = None,
        types: Mapping[str, pa.DataType] | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> Iterator[Chunk]:
        """Record batches of every file, split into ``num_shards`` disjoint shards that together
        hold every row once.

        Parquet sources with at least ``num_shards`` row groups in all are split by row group:
        row group ``k`` (counted over all files) goes to shard ``k % num_shards``, and a shard
        decodes only its own row groups. Otherwise (CSV/TSV, whose blocks can only be found by
        reading, or too few row groups) record batch ``k`` goes to shard ``k % num_shards``, and
        every shard reads the whole source to keep its part.
        """
        if num_shards > 1 and self._row_groups_at_least(num_shards):
            group = 0
            for path in self.files():
                mine = lambda g, first=group: (first + g) % num_shards == shard_index  # noqa: E731
                yield from self._file_chunks(path, columns, types or {}, keep_group=mine)
                group += _open_parquet(path).num_row_groups
            return
        counter = 0
        for path in self.files():
            for chunk in self._file_chunks(path, columns, types or {}):
                if counter % num_shards == shard_index:
                    yield chunk
                counter += 1

    def _row_groups_at_least(self, count: int) -> bool:
        """Whether every file is Parquet and they hold at least ``count`` row groups in all."""
        files = self.files()
        if not all(self.format_of(path) is FileFormat.PARQUET for path in files):
            return False
        return sum(_open_parquet(path).num_row_groups for path in files) >= count

    def num_rows(self) -> int | None:
        """Rows in all files, from the Parquet metadata (nothing is decoded); None when a file is
        CSV/TSV, whose rows are only known by reading it (progress bars then show no total)."""
        files = self.files()
        if not all(self.format_of(path) is FileFormat.PARQUET for path in files):
            return None
        return sum(_open_parquet(path).metadata.num_rows for path in files)

    def _file_chunks(
        self, path: str, columns: Sequence[str] | None, types: Mapping[str, pa.DataType], keep_group: Any = None
    ) -> Iterator[Chunk]:
        """The chunks of one file; ``keep_group(g)`` False skips Parquet row group ``g`` without
        decoding it."""
        if columns is not None:
            self._check_columns(path, columns)
        next_row = 1
        if self.format_of(path) is FileFormat.PARQUET:
            parquet = _open_parquet(path)
            if parquet.metadata.num_rows == 0:
                raise DataError("file is empty (no rows)", path=path)
            # One row group at a time: over a whole file, iter_batches pre-buffers every row group
            # (the file's size in memory); per row group it holds one.
            for group in range(parquet.num_row_groups):
                if keep_group is not None and not keep_group(group):
                    next_row += parquet.metadata.row_group(group).num_rows
                    continue
                batches = parquet.iter_batches(
                    batch_size=self.parquet_batch_rows, row_groups=[group], columns=list(columns) if columns else None
                )
                for records in batches:
                    yield Chunk(records, path, next_row)
                    next_row += records.num_rows
            return
        text_columns = self._text_columns(path, columns, types) if self.skip_bad_rows else []
        failure: pa.ArrowInvalid | None = None
        with self._open_csv(path, columns, types) as stream:
            try:
                for records in stream:
                    if not records.num_rows:
                        continue
                    first_row, next_row = next_row, next_row + records.num_rows
                    if text_columns:  # skipping: text arrived as bytes, to drop rows that are not UTF-8
                        records, not_utf8, _ = decode_utf8(records, text_columns)
                        if not_utf8.any():
                            self.skipped.extend((first_row + np.flatnonzero(not_utf8)).tolist())
                            records = records.filter(pa.array(~not_utf8))
                    yield Chunk(records, path, first_row)
            except pa.ArrowInvalid as error:
                failure = error
        if failure is not None:  # diagnosed after the stream is closed (it re-reads the file)
            raise self._diagnose_csv(path, columns, types, failure) from None
        if next_row == 1:
            raise DataError("file has no data rows", path=path)

    def require_columns(self, columns: Sequence[str]) -> None:
        """Raise the DataError a read would raise when a file lacks one of ``columns`` (reads
        only headers / Parquet metadata)."""
        for path in self.files():
            self._check_columns(path, columns)

    def _check_columns(self, path: str, columns: Sequence[str]) -> None:
        found = self.columns_of(path)
        missing = [c for c in columns if c not in found]
        if missing:
            hint = ""
            if len(found) == 1 and self.format_of(path) is not FileFormat.PARQUET:
                hint = f" (one column {found[0][:60]!r} was found: {delimiter_hint(path, self._delimiter(path))})"
            raise DataError(
                f"missing column(s) {missing}; the file has {found[:20]}{'...' if len(found) > 20 else ''}{hint}",
                path=path,
                column=missing[0],
            )

    def _delimiter(self, path: str) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if self.format_of(path) is FileFormat.TSV else ","

    def _text_columns(self, path: str, columns: Sequence[str] | None, types: Mapping[str, pa.DataType]) -> list[str]:
        """The columns read as bytes and decoded per batch when skipping bad rows: every column
        read (all are text then), so a row that is not UTF-8 can be dropped alone."""
        return list(dict.fromkeys([*(columns if columns is not None else self.columns_of(path)), *types]))

    def _open_csv(
        self,
        path: str,
        columns: Sequence[str] | None,
        types: Mapping[str, pa.DataType],
        *,
        on_invalid_row: Any = None,
        use_threads: bool = True,
        as_bytes: bool = False,
    ) -> CsvStream:
        """A stream of the file's record batches. Rows with the wrong number of fields raise,
        or go to ``on_invalid_row``, or (``skip_bad_rows``) are skipped and counted; with
        ``skip_bad_rows`` (or ``as_bytes``) every column read is text, read as bytes."""
        if os.path.getsize(path) == 0:
            raise DataError("file is empty", path=path)
        skipped = self.skipped

        def count_and_skip(row: Any) -> str:
            skipped.append(0 if row.number is None else row.number)
            return "skip"

        if self.skip_bad_rows or as_bytes:
            # Numbers are then parsed (and bad rows dropped) by the preprocessor, not by the
            # reader, and text is checked for UTF-8 a batch at a time (decode_utf8).
            types = {name: pa.binary() for name in self._text_columns(path, columns, types)}
        if on_invalid_row is None and self.skip_bad_rows:
            on_invalid_row = count_and_skip
        read_options = pacsv.ReadOptions(
            use_threads=use_threads,
            block_size=self.block_bytes,
            column_names=list(self.column_names) if self.column_names else None,
            skip_rows=1 if (self.column_names and self.header) else 0,
            autogenerate_column_names=not self.column_names and not self.header,
        )
        convert_options = pacsv.ConvertOptions(
            include_columns=list(columns) if columns else None,
            column_types=dict(types),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            return CsvStream(
                path,
                read_options=read_options,
                convert_options=convert_options,
                delimiter=self._delimiter(path),
                on_invalid_row=on_invalid_row,
            )
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):
                raise DataError("file is empty", path=path) from None
            if as_bytes:
                raise
            raise self._diagnose_csv(path, columns, types, error) from None

    def _diagnose_csv(
        self, path: str, columns: Sequence[str] | None, types: Mapping[str, pa.DataType], error: pa.ArrowInvalid
    ) -> DataError:
        """Names the row and column of a CSV that Arrow rejected (its messages name neither).

        Re-reads the file on one thread (so rows are numbered) with every column as bytes, then
        finds the first row with the wrong number of fields, bytes that are not UTF-8, or a
        non-number in a numeric column.
        """
        from recstack.data.columns import bad_number_rows

        header_lines = 1 if self.header else 0
        invalid: list[Any] = []

        def record(row: Any) -> str:
            if self.skip_bad_rows:
                return "skip"
            invalid.append(row)
            return "error"

        numeric = [name for name, kind in types.items() if not (pa.types.is_string(kind) or pa.types.is_binary(kind))]
        next_row = 1
        try:
            with self._open_csv(path, columns, types, on_invalid_row=record, use_threads=False, as_bytes=True) as stream:
                for raw in stream:
                    records, _, not_utf8 = decode_utf8(raw, raw.schema.names)
                    found = [(row, name, None) for name, row in not_utf8.items()]
                    for name in numeric:
                        if name in records.schema.names:
                            bad = bad_number_rows(records.column(name))
                            if bad.any():
                                found.append((int(bad.argmax()), name, records.column(name)[int(bad.argmax())].as_py()))
                    if found:
                        row, name, value = min(found, key=lambda item: item[0])
                        if name in not_utf8:
                            text = raw.column(name)[row].as_py()
                            return DataError(
                                f"not UTF-8 text: {text[:60]!r} (save the file as UTF-8, or skip such rows with "
                                "skip_bad_rows: true / --skip-bad-rows)",
                                path=path,
                                row=next_row + row,
                                column=name,
                            )
                        return DataError(f"expected a number, got {value!r}", path=path, row=next_row + row, column=name)
                    next_row += records.num_rows
        except pa.ArrowInvalid:
            if invalid:
                row = invalid[0]
                names = self.columns_of(path)
                column = names[row.actual_columns] if row.actual_columns < len(names) else None
                hint = f" ({delimiter_hint(path, self._delimiter(path))})" if row.actual_columns == 1 else ""
                return DataError(
                    f"expected {row.expected_columns} fields, got {row.actual_columns}: {row.text[:80]!r}{hint}",
                    path=path,
                    row=None if row.number is None else row.number - header_lines,
                    column=column,
                )
        return DataError(f"could not parse: {error}", path=path)


def _open_parquet(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        if os.path.getsize(path) == 0:
            raise DataError("file is empty (0 bytes)", path=path) from None
        raise DataError(f"not a readable Parquet file: {error}", path=path) from None
