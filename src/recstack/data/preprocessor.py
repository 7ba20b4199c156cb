"""Fit once on the training split, save as JSON, transform record batches into typed batches.

Everything is vectorised a column at a time; the fitted state is plain JSON (no pickle), so
training, evaluation and serving share exactly the same transformation.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from recstack.atomic import write_json_atomic
from recstack.data.bad_rows import bad_rows
from recstack.data.batch import Batch, PADDING_INDEX
from recstack.data.columns import (
    Jagged,
    Where,
    invalid_numbers,
    number_kind,
    pad_recent,
    split_pairs,
    split_values,
    stack_vectors,
    to_float,
)
from recstack.data.feature_map import FeatureMap, TableInfo, table_name
from recstack.data.numeric import NumericNormalizer, NumericStats
from recstack.data.sources import Chunk, DataSource
from recstack.data.vocabulary import HashBuckets, Vocabulary, VocabularyCounter, vocabulary_from_ids
from recstack.errors import DataError
from recstack.schema import (
    CategoricalFeature,
    NumericFeature,
    NumericTransform,
    Schema,
    SequenceFeature,
    VectorFeature,
    WeightFormat,
    is_embedded,
    source_columns,
)
from recstack.schema.enums import InvalidPolicy, LabelKind

FORMAT_VERSION = 1


class TruncatedListsWarning(UserWarning):
    """Lists longer than their feature's ``maxlen`` were truncated (once per feature and run)."""


@dataclass(frozen=True)
class _Screened:
    """A chunk after the row-level checks: bad rows dropped, numbers and the label parsed once."""

    chunk: Chunk
    rows: np.ndarray | None  # (B,) offset in the chunk as read of each kept row; None: every row kept
    numbers: dict[str, np.ndarray]  # numeric feature name -> (B,) float64, NaN = missing (or filled)
    label: np.ndarray | None  # (B,) float64


class Preprocessor:
    """Schema-driven transformation from Arrow record batches to :class:`Batch`.

    Example::

        pre = Preprocessor(schema).fit(DataSource(paths=("train.parquet",)))
        batch = pre.transform(next(source.chunks(columns=pre.input_columns())))
        pre.save("run/preprocessor.json")
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.lookups: dict[str, Vocabulary | HashBuckets] = {}
        self.normalizers: dict[str, NumericNormalizer] = {}
        self.table_dims: dict[str, int] = {}
        # Counters of this process (DataLoader workers keep their own); compare two readings.
        self.skipped_rows = 0  # rows dropped by skip_bad_rows and by on_invalid: skip_row
        self.invalid_values: dict[str, int] = {}  # per feature: NaN/inf values filled or rows dropped
        self.truncated_rows: dict[str, int] = {}  # per sequence feature: rows longer than maxlen
        self._warned_truncation: set[str] = set()

    # ---- fitting ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.lookups or self.normalizers) or not self.schema.embedded()

    def fit(self, source: DataSource | Iterable[Chunk]) -> "Preprocessor":
        """One streaming pass: counts vocabularies and numeric statistics; memory is bounded.

        Rows are checked as in ``transform`` (NaN/inf numbers by each numeric feature's
        ``on_invalid``, labels by the schema's ``label_kind``), so bad data fails here, before
        training; rows to skip are left out of the statistics. Vectors and sequence weights,
        which have nothing to fit, are checked by ``transform`` (and screened here only for
        ``on_invalid: skip_row``). Lists longer than ``maxlen`` are counted, and warned about
        once per feature.
        """
        counters: dict[str, VocabularyCounter] = {}
        stats: dict[str, NumericStats] = {}
        truncated: dict[str, int] = {}
        rows_read = 0
        tables_to_count = {
            name for name, spec in self.schema.tables.items() if spec.hash_buckets is None and not spec.pretrained
        }
        if isinstance(source, DataSource):
            with_label = self._files_have_label(source)
            columns = self.input_columns(with_label=False)
            if with_label and self.schema.label not in columns:
                columns.append(self.schema.label)
            chunks: Iterable[Chunk] = source.chunks(columns=columns, types=self.csv_types())
        else:
            with_label, chunks = None, source
        skip_bad_rows = isinstance(source, DataSource) and source.skip_bad_rows
        for raw_chunk in chunks:
            self._check_columns(raw_chunk, self.schema.features)
            label_here = with_label if with_label is not None else self._has_label(raw_chunk.records)
            screened = self._screen(raw_chunk, self.schema.features, skip_bad_rows=skip_bad_rows, with_label=label_here)
            records = screened.chunk.records
            rows_read += records.num_rows
            for feature in self.schema.features:
                if isinstance(feature, NumericFeature):
                    if feature.name not in stats:
                        quantiles = feature.transform is NumericTransform.BUCKETIZE and feature.boundaries is None
                        stats[feature.name] = NumericStats(sample=quantiles)
                    stats[feature.name].update(screened.numbers[feature.name])
                elif isinstance(feature, SequenceFeature):
                    # ids only: vectors and weights have nothing to fit, and transform checks them
                    where = self._where(screened, feature, feature.column)
                    jagged = split_values(records.column(feature.column), feature.delimiter, where)
                    if feature.weights is WeightFormat.PAIRS:
                        jagged, _ = split_pairs(jagged, feature.pair_separator, where)
                    truncated[feature.name] = truncated.get(feature.name, 0) + int((jagged.lengths > feature.maxlen).sum())
                    if feature.table in tables_to_count:
                        counters.setdefault(feature.table, VocabularyCounter()).update(jagged.values)
                elif isinstance(feature, CategoricalFeature) and feature.table in tables_to_count:
                    counters.setdefault(feature.table, VocabularyCounter()).update(records.column(feature.column))
        for name, spec in self.schema.tables.items():
            if spec.hash_buckets is not None:
                self.lookups[name] = HashBuckets(spec.hash_buckets)
                self.table_dims[name] = spec.dim
            elif spec.pretrained:
                from recstack.pretrain.vector_file import read_vectors

                vectors = read_vectors(spec.pretrained, spec.pretrained_format)
                self.lookups[name] = vocabulary_from_ids(vectors.ids)
                self.table_dims[name] = vectors.dim
            else:
                counter = counters.get(name, VocabularyCounter())
                keys = counter.most_common(min_count=spec.min_count, max_size=spec.max_size)
                self.lookups[name] = Vocabulary(keys=keys)
                self.table_dims[name] = spec.dim
        for feature in self.schema.features:
            if isinstance(feature, NumericFeature):
                self.normalizers[feature.name] = NumericNormalizer.fit(feature, stats.get(feature.name, NumericStats()))
                if feature.transform is NumericTransform.BUCKETIZE:
                    self.table_dims[feature.name] = feature.dim
        self._warn_truncated(truncated, f"of the {rows_read} rows fitted on")
        return self

    def warn_truncated(self) -> None:
        """Warns (once per feature and preprocessor) about the rows ``transform`` has truncated so
        far; workflows that only transform (predict, evaluate) call it after their pass."""
        self._warn_truncated(self.truncated_rows, "read")

    def _warn_truncated(self, counts: Mapping[str, int], rows_read: str) -> None:
        for name, count in counts.items():
            if not count or name in self._warned_truncation:
                continue
            feature = self.schema[name]
            assert isinstance(feature, SequenceFeature)
            kept = "last (most recent)" if feature.truncate.value == "recent" else "first"
            warnings.warn(
                f"feature {name!r} (column {feature.column!r}): {count} row(s) {rows_read} hold more than "
                f"maxlen={feature.maxlen} values; each kept its {kept} {feature.maxlen} "
                f"(truncate: {feature.truncate.value}; raise maxlen to keep more)",
                TruncatedListsWarning,
                stacklevel=3,
            )
            self._warned_truncation.add(name)

    def _files_have_label(self, source: DataSource) -> bool:
        label = self.schema.label
        return bool(label) and all(label in source.columns_of(path) for path in source.files())

    def _has_label(self, records: pa.RecordBatch) -> bool:
        return bool(self.schema.label) and self.schema.label in records.schema.names

    # ---- reading helpers --------------------------------------------------------------------
    def input_columns(self, *, with_label: bool = True) -> list[str]:
        columns = self.schema.columns()
        if not with_label and self.schema.label:
            columns = [c for c in columns if c != self.schema.label or self._is_feature_column(c)]
        return columns

    def _is_feature_column(self, column: str) -> bool:
        return any(column in (getattr(f, "column", ""), *getattr(f, "columns", ())) for f in self.schema.features)

    def csv_types(self) -> dict[str, pa.DataType]:
        """Column types for CSV readers: text for ids and numbers (parsed here, with row-level
        errors), float64 for multi-column vectors (seed 000's 256 float columns)."""
        types: dict[str, pa.DataType] = {}
        for feature in self.schema.features:
            if isinstance(feature, VectorFeature) and feature.columns:
                types.update({c: pa.float64() for c in feature.columns})
            else:
                for column in (getattr(feature, "column", ""), getattr(feature, "weight_column", None)):
                    if column:
                        types[column] = pa.string()
        for column in (self.schema.label, self.schema.group):
            if column:
                types.setdefault(column, pa.string())
        return types

    # ---- transforming -----------------------------------------------------------------------
    def transform(
        self,
        chunk: Chunk | pa.RecordBatch | pa.Table,
        *,
        skip_bad_rows: bool = False,
        with_label: bool | None = None,
        features: Sequence[str] | None = None,
    ) -> Batch:
        """A typed batch from one record batch; unknown category values map to the OOV row.

        Args:
            chunk: a :class:`Chunk` (errors then name the file and row) or a bare record batch.
            skip_bad_rows: drop rows with unparseable values instead of raising; the count is
                added to ``self.skipped_rows``.
            with_label: read the label column (default: when the data has it).
            features: transform only these features (an item catalogue holds only item columns).
        """
        if not isinstance(chunk, Chunk):
            records = chunk.combine_chunks().to_batches()[0] if isinstance(chunk, pa.Table) and chunk.num_rows else chunk
            if isinstance(records, pa.Table):
                records = pa.RecordBatch.from_pydict({n: pa.array([], t) for n, t in zip(chunk.schema.names, chunk.schema.types)})
            chunk = Chunk(records, "<records>", 1)
        selected = self.schema.features if features is None else [self.schema[name] for name in features]
        label = self.schema.label
        if with_label is None:
            with_label = self._has_label(chunk.records)
        with_label = with_label and bool(label)  # a schema without a label has none to read
        if with_label and label not in chunk.records.schema.names:
            raise DataError(f"the label column {label!r} is missing", path=chunk.path, column=label)
        self._check_columns(chunk, selected)
        screened = self._screen(chunk, selected, skip_bad_rows=skip_bad_rows, with_label=with_label)
        batch = Batch()
        for feature in selected:
            self._transform_feature(screened, feature, batch)
        if screened.label is not None:
            batch.label = torch.from_numpy(screened.label.astype(np.float32))
        records = screened.chunk.records
        group = self.schema.group
        if group and group in records.schema.names:
            batch.group = records.column(group).to_numpy(zero_copy_only=False)
        return batch

    def _transform_feature(self, screened: _Screened, feature: Any, batch: Batch) -> None:
        records = screened.chunk.records
        if isinstance(feature, CategoricalFeature):
            rows = self.lookups[feature.table].lookup(records.column(feature.column))
            batch.ids[feature.name] = torch.from_numpy(rows)
        elif isinstance(feature, NumericFeature):
            out = self.normalizers[feature.name].apply(screened.numbers[feature.name])
            target = batch.ids if feature.transform is NumericTransform.BUCKETIZE else batch.dense
            target[feature.name] = torch.from_numpy(out)
        elif isinstance(feature, SequenceFeature):
            self._transform_sequence(screened, feature, batch)
        elif isinstance(feature, VectorFeature):
            batch.dense[feature.name] = torch.from_numpy(self._vectors(screened, feature))

    def _transform_sequence(self, screened: _Screened, feature: SequenceFeature, batch: Batch) -> None:
        jagged, weights = self._sequence_values(screened, feature)
        truncated = int((jagged.lengths > feature.maxlen).sum())
        if truncated:
            self.truncated_rows[feature.name] = self.truncated_rows.get(feature.name, 0) + truncated
        rows = self.lookups[feature.table].lookup(jagged.values)
        padded = pad_recent(rows, jagged.lengths, feature.maxlen, fill=PADDING_INDEX, truncate=feature.truncate)
        batch.sequences[feature.name] = torch.from_numpy(padded)
        if weights is not None:
            padded_weights = pad_recent(weights, jagged.lengths, feature.maxlen, fill=0.0, truncate=feature.truncate)
            padded_weights[padded == PADDING_INDEX] = 0.0  # ids without a row carry no weight
            batch.weights[feature.name] = torch.from_numpy(padded_weights)

    # ---- parsing, with each feature's on_invalid applied -------------------------------------
    def _sequence_values(
        self, screened: _Screened, feature: SequenceFeature, *, check: bool = True
    ) -> tuple[Jagged, np.ndarray | None]:
        """The list values ``(N,)`` with their row lengths ``(B,)``, and float32 weights ``(N,)``
        when the feature has them (with ``check``, NaN/inf weights raise, or become 0 with
        ``on_invalid: fill``)."""
        records = screened.chunk.records
        where = self._where(screened, feature, feature.column)
        jagged = split_values(records.column(feature.column), feature.delimiter, where)
        weights = None
        if feature.weights is WeightFormat.PAIRS:
            jagged, weights = split_pairs(jagged, feature.pair_separator, where)
        elif feature.weights is WeightFormat.COLUMN:
            where = self._where(screened, feature, feature.weight_column or "")
            weight_jagged = split_values(records.column(feature.weight_column), feature.delimiter, where)
            mismatch = weight_jagged.lengths != jagged.lengths
            if mismatch.any():
                row = int(np.flatnonzero(mismatch)[0])
                raise where.error(
                    f"expected {int(jagged.lengths[row])} weights (one per value of {feature.column!r}), got {int(weight_jagged.lengths[row])}",
                    row,
                )
            weights = to_float(weight_jagged.values, where).astype(np.float32)
        if weights is not None and check:
            invalid = ~np.isfinite(weights)  # empty tokens were dropped: a non-finite weight was written so
            if invalid.any():
                value_rows = np.repeat(np.arange(len(jagged.lengths)), jagged.lengths)  # (N,) row of each value
                weights = self._apply_invalid(feature, where, weights, invalid, value_rows, "weight")
        return jagged, weights

    def _vectors(self, screened: _Screened, feature: VectorFeature) -> np.ndarray:
        """``(B, D)`` float32; a missing element (null or empty column) is 0, a NaN/inf one follows
        ``on_invalid`` (``fill``: 0)."""
        records = screened.chunk.records
        if feature.columns:
            parts, invalid_parts = [], []
            for column in feature.columns:
                values = to_float(records.column(column), self._where(screened, feature, column))
                parts.append(values)
                invalid = invalid_numbers(records.column(column), values)
                invalid_parts.append(np.zeros(len(values), dtype=bool) if invalid is None else invalid)
            matrix = np.column_stack(parts).astype(np.float32)  # (B, D)
            invalid = np.column_stack(invalid_parts)  # (B, D)
            if invalid.any():
                first_column = feature.columns[int(np.flatnonzero(invalid.any(axis=0))[0])]
                where = self._where(screened, feature, first_column)
                rows = np.broadcast_to(np.arange(len(matrix))[:, None], matrix.shape)
                flat = self._apply_invalid(feature, where, matrix.reshape(-1), invalid.reshape(-1), rows.reshape(-1), "value")
                matrix = flat.reshape(matrix.shape)
            matrix = np.nan_to_num(matrix, nan=0.0)  # missing elements
        else:
            where = self._where(screened, feature, feature.column)
            matrix = stack_vectors(records.column(feature.column), feature.dim, feature.delimiter, where)
            invalid = ~np.isfinite(matrix)
            if invalid.any():
                rows = np.broadcast_to(np.arange(len(matrix))[:, None], matrix.shape)
                flat = self._apply_invalid(feature, where, matrix.reshape(-1), invalid.reshape(-1), rows.reshape(-1), "value")
                matrix = flat.reshape(matrix.shape)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not matrix.flags.writeable:  # a zero-copy view of Arrow's buffer: tensors must own theirs
            matrix = matrix.copy()
        return matrix

    def _apply_invalid(
        self, feature: Any, where: Where, values: np.ndarray, invalid: np.ndarray, rows: np.ndarray, what: str
    ) -> np.ndarray:
        """``values`` with its NaN/inf entries (``invalid``, on chunk rows ``rows``) raised as a
        DataError (``on_invalid: error``) or replaced by 0 (``fill``); ``skip_row`` rows were
        dropped by ``_screen`` already."""
        first = int(np.flatnonzero(invalid)[0])
        if feature.on_invalid is InvalidPolicy.ERROR:
            raise where.error(_invalid_problem(what, values[first]), int(rows[first]))
        self.invalid_values[feature.name] = self.invalid_values.get(feature.name, 0) + int(invalid.sum())
        return np.where(invalid, np.float32(0.0), values).astype(values.dtype)

    # ---- row-level checks --------------------------------------------------------------------
    def _screen(self, chunk: Chunk, features: Sequence[Any], *, skip_bad_rows: bool, with_label: bool) -> _Screened:
        """Drops the rows to skip (unparseable with ``skip_bad_rows``; NaN/inf values of features
        with ``on_invalid: skip_row``; bad labels with ``skip_bad_rows``), raises on NaN/inf numbers
        (``on_invalid: error``) and bad labels, and parses numeric columns once.

        Row numbers in errors are those of the file as read, before any row was dropped.
        """
        records = chunk.records
        rows: np.ndarray | None = None
        if skip_bad_rows:
            bad = bad_rows(self.schema, records)
            if bad.any():
                self.skipped_rows += int(bad.sum())
                rows = np.flatnonzero(~bad)
                records = records.filter(pa.array(~bad))
        screened = _Screened(Chunk(records, chunk.path, chunk.first_row), rows, {}, None)
        drop = np.zeros(records.num_rows, dtype=bool)
        numbers: dict[str, np.ndarray] = {}
        for feature in features:
            if isinstance(feature, NumericFeature):
                where = self._where(screened, feature, feature.column)
                column = records.column(feature.column)
                values = to_float(column, where)
                invalid = invalid_numbers(column, values)
                if invalid is not None:
                    if feature.on_invalid is InvalidPolicy.ERROR:
                        first = int(np.flatnonzero(invalid)[0])
                        raise where.error(_invalid_problem("value", values[first]), first)
                    self.invalid_values[feature.name] = self.invalid_values.get(feature.name, 0) + int(invalid.sum())
                    if feature.on_invalid is InvalidPolicy.FILL:
                        values = np.where(invalid, np.nan, values)  # missing: normalisation fills it
                    else:
                        drop |= invalid
                numbers[feature.name] = values
            elif getattr(feature, "on_invalid", None) is InvalidPolicy.SKIP_ROW:
                drop |= self._invalid_rows(screened, feature)
        label = None
        if with_label and self.schema.label:
            label, bad_label = self._labels(screened, raise_on_bad=not skip_bad_rows)
            drop |= bad_label
        if drop.any():
            keep = ~drop
            self.skipped_rows += int(drop.sum())
            numbers = {name: values[keep] for name, values in numbers.items()}
            label = None if label is None else label[keep]
            rows = np.flatnonzero(keep) if rows is None else rows[keep]
            records = records.filter(pa.array(keep))
        return _Screened(Chunk(records, chunk.path, chunk.first_row), rows, numbers, label)

    def _invalid_rows(self, screened: _Screened, feature: VectorFeature | SequenceFeature) -> np.ndarray:
        """``(B,)`` bool: rows where a vector element or a sequence weight is NaN/inf (counted)."""
        records = screened.chunk.records
        bad = np.zeros(records.num_rows, dtype=bool)
        if isinstance(feature, VectorFeature) and feature.columns:
            for column in feature.columns:
                values = to_float(records.column(column), self._where(screened, feature, column))
                invalid = invalid_numbers(records.column(column), values)
                if invalid is not None:
                    bad |= invalid
        elif isinstance(feature, VectorFeature):
            where = self._where(screened, feature, feature.column)
            matrix = stack_vectors(records.column(feature.column), feature.dim, feature.delimiter, where)
            bad = ~np.isfinite(matrix).all(axis=1)
        elif isinstance(feature, SequenceFeature) and feature.weights is not WeightFormat.NONE:
            jagged, weights = self._sequence_values(screened, feature, check=False)
            assert weights is not None
            value_rows = np.repeat(np.arange(len(jagged.lengths)), jagged.lengths)  # (N,) row of each value
            bad[value_rows[~np.isfinite(weights)]] = True
        if bad.any():
            self.invalid_values[feature.name] = self.invalid_values.get(feature.name, 0) + int(bad.sum())
        return bad

    def _labels(self, screened: _Screened, *, raise_on_bad: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(B,)`` float64 labels and ``(B,)`` bool rows with a bad one (missing, NaN, inf, or not
        0/1 for ``label_kind: binary``); with ``raise_on_bad`` the first bad label raises instead."""
        label = self.schema.label
        assert label is not None
        column = screened.chunk.records.column(label)
        where = self._where(screened, None, label)
        values = to_float(column, where)
        binary = self.schema.label_kind is LabelKind.BINARY
        ok = (values == 0) | (values == 1) if binary else np.isfinite(values)
        bad = ~ok
        if raise_on_bad and bad.any():
            first = int(np.flatnonzero(bad)[0])
            expected = "0 or 1 (label_kind: binary; 'real' takes any finite number)" if binary else "a finite number (label_kind: real)"
            value = values[first]
            if np.isnan(value) and invalid_numbers(column.slice(first, 1), values[first : first + 1]) is None:
                raise where.error(f"the label is missing; expected {expected}", first)
            found = number_kind(value) if not np.isfinite(value) else repr(column[first].as_py())
            raise where.error(f"the label is {found}; expected {expected}", first)
        return values, bad

    @staticmethod
    def _check_columns(chunk: Chunk, features: Sequence[Any]) -> None:
        names = chunk.records.schema.names
        for feature in features:
            for column in source_columns(feature):
                if column not in names:
                    raise DataError("missing column", path=chunk.path, column=column, feature=feature.name)

    @staticmethod
    def _where(screened: _Screened, feature: Any, column: str) -> Where:
        chunk = screened.chunk
        return Where(chunk.path, chunk.first_row, column, column if feature is None else feature.name, screened.rows)

    # ---- the fitted contract ----------------------------------------------------------------
    def feature_map(self) -> FeatureMap:
        tables: dict[str, TableInfo] = {}
        for feature in self.schema.features:
            if not is_embedded(feature):
                continue
            name = table_name(feature)
            spec = self.schema.tables.get(name)
            if isinstance(feature, NumericFeature):
                rows = self.normalizers[feature.name].num_buckets
            else:
                rows = self.lookups[name].num_rows
            tables[name] = TableInfo(
                name=name,
                num_rows=rows,
                dim=self.table_dims[name],
                pretrained=spec.pretrained if spec else None,
                pretrained_format=spec.pretrained_format if spec else None,
                trainable=spec.trainable if spec else True,
            )
        return FeatureMap(schema=self.schema, tables=tables)

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "vocabularies": {n: v.to_dict() for n, v in self.lookups.items() if isinstance(v, Vocabulary)},
            "hash_buckets": {n: v.buckets for n, v in self.lookups.items() if isinstance(v, HashBuckets)},
            "normalizers": {n: v.to_dict() for n, v in self.normalizers.items()},
            "table_dims": self.table_dims,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessor":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported preprocessor format_version {data.get('format_version')!r}")
        pre = cls(Schema.from_dict(data["schema"]))
        pre.lookups = {n: Vocabulary.from_dict(v) for n, v in data["vocabularies"].items()}
        pre.lookups.update({n: HashBuckets(int(b)) for n, b in data["hash_buckets"].items()})
        pre.normalizers = {n: NumericNormalizer.from_dict(v) for n, v in data["normalizers"].items()}
        pre.table_dims = {n: int(d) for n, d in data["table_dims"].items()}
        return pre

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Preprocessor":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def _invalid_problem(what: str, value: float) -> str:
    return (
        f"{number_kind(float(value))} {what} (on_invalid: error); set the feature's on_invalid to "
        "'fill' (use its fill value) or 'skip_row' (drop the row) to accept such values"
    )
