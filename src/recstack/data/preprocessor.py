"""Fit once on the training split, save as JSON, transform record batches into typed batches.

Everything is vectorised a column at a time; the fitted state is plain JSON (no pickle), so
training, evaluation and serving share exactly the same transformation.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from recstack.atomic import write_json_atomic
from recstack.data.batch import Batch, PADDING_INDEX
from recstack.data.columns import pad_recent, split_pairs, split_values
from recstack.data.feature_map import FeatureMap, TableInfo, table_name
from recstack.data.incremental import NumericUpdate, check_growable, check_numeric_stats, grow_from
from recstack.data.numeric import NumericNormalizer, NumericStats
from recstack.data.screening import Screened, check_columns, check_targets, screen, sequence_values, vector_matrix
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
)
from recstack.schema.enums import Truncation
from recstack.vector_io import read_vectors

FORMAT_VERSION = 1


class TruncatedListsWarning(UserWarning):
    """Lists longer than their feature's ``maxlen`` were truncated (once per feature and run)."""


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
        # moments of every numeric feature's training values (incremental refits merge them)
        self.numeric_stats: dict[str, NumericStats] = {}
        # Counters of this process (DataLoader workers keep their own); compare two readings.
        self.skipped_rows = 0  # rows dropped by skip_bad_rows and by on_invalid: skip_row
        self.invalid_values: dict[str, int] = {}  # per feature: NaN/inf values filled or rows dropped
        self.truncated_rows: dict[str, int] = {}  # per sequence feature: rows longer than maxlen
        self._warned_truncation: set[str] = set()

    # ---- fitting ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.lookups or self.normalizers) or not self.schema.embedded()

    def fit(
        self,
        source: DataSource | Iterable[Chunk],
        *,
        parent: "Preprocessor | None" = None,
        numeric: NumericUpdate = NumericUpdate.KEEP,
    ) -> "Preprocessor":
        """One streaming pass: counts vocabularies and numeric statistics; memory is bounded.

        With ``parent`` (a preprocessor fitted earlier, incremental training), the result is
        ``parent`` grown by this data: every known value keeps its row, new values above
        ``min_count`` get rows appended, numeric normalisers are kept or updated by ``numeric``
        (see ``data/incremental.py``); a schema change that cannot be grown is a ConfigError
        naming the feature, raised before any data is read.

        Rows are checked as in ``transform`` (NaN/inf numbers by each numeric feature's
        ``on_invalid``, labels by each target's kind), so bad data fails here, before
        training; rows to skip are left out of the statistics. Vectors and sequence weights,
        which have nothing to fit, are checked by ``transform`` (and screened here only for
        ``on_invalid: skip_row``). Lists longer than ``maxlen`` are counted, and warned about
        once per feature.
        """
        if parent is not None:
            check_growable(parent.schema, self.schema)
            check_numeric_stats(parent, numeric)
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
            if with_label:
                columns.extend(name for name in self.schema.target_names if name not in columns)
            chunks: Iterable[Chunk] = source.chunks(columns=columns, types=self.csv_types())
        else:
            with_label, chunks = None, source
        skip_bad_rows = isinstance(source, DataSource) and source.skip_bad_rows
        for raw_chunk in chunks:
            check_columns(raw_chunk, self.schema.features)
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
                    where = screened.where(feature, feature.column)
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
                self.numeric_stats[feature.name] = stats.get(feature.name, NumericStats(sample=False))
                self.normalizers[feature.name] = NumericNormalizer.fit(feature, self.numeric_stats[feature.name])
                if feature.transform is NumericTransform.BUCKETIZE:
                    self.table_dims[feature.name] = feature.dim
        self._warn_truncated(truncated, f"of the {rows_read} rows fitted on")
        if parent is not None:
            grow_from(self, parent, numeric)
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
            kept = "last (most recent)" if feature.truncate is Truncation.RECENT else "first"
            warnings.warn(
                f"feature {name!r} (column {feature.column!r}): {count} row(s) {rows_read} hold more than "
                f"maxlen={feature.maxlen} values; each kept its {kept} {feature.maxlen} "
                f"(truncate: {feature.truncate.value}; raise maxlen to keep more)",
                TruncatedListsWarning,
                stacklevel=3,
            )
            self._warned_truncation.add(name)

    def _files_have_label(self, source: DataSource) -> bool:
        """True when every file holds every target; a file holding some targets but not all is
        a DataError naming the missing target and the file (one without any is unlabelled)."""
        targets = self.schema.target_names
        if not targets:
            return False
        complete = True
        for path in source.files():
            columns = source.columns_of(path)
            missing = [name for name in targets if name not in columns]
            if missing and len(targets) > 1 and len(missing) < len(targets):
                raise DataError(
                    f"target {missing[0]!r}: its column is missing (the schema's targets: {', '.join(targets)})",
                    path=str(path),
                    column=missing[0],
                )
            complete = complete and not missing
        return complete

    def _has_label(self, records: pa.RecordBatch) -> bool:
        """The records hold labels: any target's column (the others are then required)."""
        return any(name in records.schema.names for name in self.schema.target_names)

    # ---- reading helpers --------------------------------------------------------------------
    def input_columns(self, *, with_label: bool = True, features: Sequence[str] | None = None) -> list[str]:
        """The columns to read: features (``features``, or all), group and, ``with_label``, the
        targets."""
        columns = self.schema.columns()
        if features is not None:
            extra = [*self.schema.target_names, *((self.schema.group,) if self.schema.group else ())]
            columns = list(dict.fromkeys([*self.schema.feature_columns(features), *extra]))
        if not with_label and self.schema.targets:
            targets = set(self.schema.target_names)
            columns = [c for c in columns if c not in targets or self._is_feature_column(c)]
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
        for column in (*self.schema.target_names, self.schema.group):
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
            with_label: read the targets' label columns (default: when the data has any of them).
            features: transform only these features (an item catalogue holds only item columns).
        """
        if not isinstance(chunk, Chunk):
            records = chunk.combine_chunks().to_batches()[0] if isinstance(chunk, pa.Table) and chunk.num_rows else chunk
            if isinstance(records, pa.Table):
                records = pa.RecordBatch.from_pydict({n: pa.array([], t) for n, t in zip(chunk.schema.names, chunk.schema.types)})
            chunk = Chunk(records, "<records>", 1)
        selected = self.schema.features if features is None else [self.schema[name] for name in features]
        if with_label is None:
            with_label = self._has_label(chunk.records)
        with_label = with_label and bool(self.schema.targets)  # a schema without targets has no label to read
        if with_label:
            check_targets(chunk, self.schema)  # DataError naming the missing target and the file
        check_columns(chunk, selected)
        screened = self._screen(chunk, selected, skip_bad_rows=skip_bad_rows, with_label=with_label)
        batch = Batch()
        for feature in selected:
            self._transform_feature(screened, feature, batch)
        if screened.labels is not None:
            batch.labels = {name: torch.from_numpy(values.astype(np.float32)) for name, values in screened.labels.items()}
        records = screened.chunk.records
        group = self.schema.group
        if group and group in records.schema.names:
            batch.group = records.column(group).to_numpy(zero_copy_only=False)
        return batch

    def _transform_feature(self, screened: Screened, feature: Any, batch: Batch) -> None:
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
            batch.dense[feature.name] = torch.from_numpy(vector_matrix(screened, feature, self.invalid_values))

    def _transform_sequence(self, screened: Screened, feature: SequenceFeature, batch: Batch) -> None:
        jagged, weights = sequence_values(screened, feature, self.invalid_values)
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

    def _screen(self, chunk: Chunk, features: Sequence[Any], *, skip_bad_rows: bool, with_label: bool) -> Screened:
        screened = screen(
            chunk,
            self.schema,
            features,
            skip_bad_rows=skip_bad_rows,
            with_label=with_label,
            invalid_counts=self.invalid_values,
        )
        self.skipped_rows += screened.skipped
        return screened

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
            "numeric_stats": {n: v.to_dict() for n, v in self.numeric_stats.items()},
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
        pre.numeric_stats = {n: NumericStats.from_dict(v) for n, v in data.get("numeric_stats", {}).items()}
        return pre

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Preprocessor":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

