"""Fit once on the training split, save as JSON, transform record batches into typed batches.

Everything is vectorised a column at a time; the fitted state is plain JSON (no pickle), so
training, evaluation and serving share exactly the same transformation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from recstack.atomic import write_json_atomic
from recstack.data.bad_rows import bad_rows
from recstack.data.batch import Batch, PADDING_INDEX
from recstack.data.columns import Where, pad_recent, split_pairs, split_values, stack_vectors, to_float
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

FORMAT_VERSION = 1


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
        self.skipped_rows = 0  # rows dropped by skip_bad_rows, in this process

    # ---- fitting ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.lookups or self.normalizers) or not self.schema.embedded()

    def fit(self, source: DataSource | Iterable[Chunk]) -> "Preprocessor":
        """One streaming pass: counts vocabularies and numeric statistics; memory is bounded."""
        counters: dict[str, VocabularyCounter] = {}
        stats: dict[str, NumericStats] = {}
        tables_to_count = {
            name for name, spec in self.schema.tables.items() if spec.hash_buckets is None and not spec.pretrained
        }
        chunks = source.chunks(columns=self.input_columns(with_label=False), types=self.csv_types()) if isinstance(source, DataSource) else source
        skip_bad_rows = isinstance(source, DataSource) and source.skip_bad_rows
        for chunk in chunks:
            if skip_bad_rows:
                chunk = self._drop_bad_rows(chunk)
            for feature in self.schema.features:
                where = self._where(chunk, feature, feature.column if hasattr(feature, "column") else "")
                if isinstance(feature, NumericFeature):
                    if feature.name not in stats:
                        quantiles = feature.transform is NumericTransform.BUCKETIZE and feature.boundaries is None
                        stats[feature.name] = NumericStats(sample=quantiles)
                    stats[feature.name].update(to_float(chunk.records.column(feature.column), where))
                elif isinstance(feature, (CategoricalFeature, SequenceFeature)) and feature.table in tables_to_count:
                    values = self._raw_values(chunk.records, feature, where)
                    counters.setdefault(feature.table, VocabularyCounter()).update(values)
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
        return self

    def _raw_values(self, records: pa.RecordBatch, feature: CategoricalFeature | SequenceFeature, where: Where) -> pa.Array:
        column = records.column(feature.column)
        if isinstance(feature, CategoricalFeature):
            return column
        jagged = split_values(column, feature.delimiter, where)
        if feature.weights is WeightFormat.PAIRS:
            jagged, _ = split_pairs(jagged, feature.pair_separator, where)
        return jagged.values

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
        if skip_bad_rows:
            chunk = self._drop_bad_rows(chunk)
        records = chunk.records
        batch = Batch()
        selected = self.schema.features if features is None else [self.schema[name] for name in features]
        for feature in selected:
            self._transform_feature(chunk, feature, batch)
        label = self.schema.label
        if with_label is None:
            with_label = bool(label) and label in records.schema.names
        if with_label and label:  # a schema without a label has none to read
            if label not in records.schema.names:
                raise DataError(f"the label column {label!r} is missing", path=chunk.path, column=label)
            where = Where(chunk.path, chunk.first_row, label, label)
            values = to_float(records.column(label), where)
            missing = np.isnan(values)
            if missing.any():
                raise where.error("the label is missing", int(np.flatnonzero(missing)[0]))
            batch.label = torch.from_numpy(values.astype(np.float32))
        group = self.schema.group
        if group and group in records.schema.names:
            batch.group = records.column(group).to_numpy(zero_copy_only=False)
        return batch

    def _transform_feature(self, chunk: Chunk, feature: Any, batch: Batch) -> None:
        records = chunk.records
        for column in source_columns(feature):
            if column not in records.schema.names:
                raise DataError("missing column", path=chunk.path, column=column, feature=feature.name)
        if isinstance(feature, CategoricalFeature):
            rows = self.lookups[feature.table].lookup(records.column(feature.column))
            batch.ids[feature.name] = torch.from_numpy(rows)
        elif isinstance(feature, NumericFeature):
            values = to_float(records.column(feature.column), self._where(chunk, feature, feature.column))
            out = self.normalizers[feature.name].apply(values)
            target = batch.ids if feature.transform is NumericTransform.BUCKETIZE else batch.dense
            target[feature.name] = torch.from_numpy(out)
        elif isinstance(feature, SequenceFeature):
            self._transform_sequence(chunk, feature, batch)
        elif isinstance(feature, VectorFeature):
            where = self._where(chunk, feature, feature.column or feature.columns[0])
            if feature.columns:
                matrix = np.column_stack([to_float(records.column(c), where) for c in feature.columns]).astype(np.float32)
                matrix = np.nan_to_num(matrix, nan=0.0)
            else:
                matrix = stack_vectors(records.column(feature.column), feature.dim, feature.delimiter, where)
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            if not matrix.flags.writeable:  # a zero-copy view of Arrow's buffer: tensors must own theirs
                matrix = matrix.copy()
            batch.dense[feature.name] = torch.from_numpy(matrix)

    def _transform_sequence(self, chunk: Chunk, feature: SequenceFeature, batch: Batch) -> None:
        where = self._where(chunk, feature, feature.column)
        jagged = split_values(chunk.records.column(feature.column), feature.delimiter, where)
        weights = None
        if feature.weights is WeightFormat.PAIRS:
            jagged, weights = split_pairs(jagged, feature.pair_separator, where)
        elif feature.weights is WeightFormat.COLUMN:
            weight_where = self._where(chunk, feature, feature.weight_column or "")
            weight_jagged = split_values(chunk.records.column(feature.weight_column), feature.delimiter, weight_where)
            mismatch = weight_jagged.lengths != jagged.lengths
            if mismatch.any():
                row = int(np.flatnonzero(mismatch)[0])
                raise weight_where.error(
                    f"expected {int(jagged.lengths[row])} weights (one per value of {feature.column!r}), got {int(weight_jagged.lengths[row])}",
                    row,
                )
            weights = to_float(weight_jagged.values, weight_where).astype(np.float32)
        rows = self.lookups[feature.table].lookup(jagged.values)
        padded = pad_recent(rows, jagged.lengths, feature.maxlen, fill=PADDING_INDEX)
        batch.sequences[feature.name] = torch.from_numpy(padded)
        if weights is not None:
            padded_weights = pad_recent(weights, jagged.lengths, feature.maxlen, fill=0.0)
            padded_weights[padded == PADDING_INDEX] = 0.0  # ids without a row carry no weight
            batch.weights[feature.name] = torch.from_numpy(padded_weights)

    def _drop_bad_rows(self, chunk: Chunk) -> Chunk:
        bad = bad_rows(self.schema, chunk.records)
        if not bad.any():
            return chunk
        self.skipped_rows += int(bad.sum())
        return Chunk(chunk.records.filter(pa.array(~bad)), chunk.path, chunk.first_row)

    @staticmethod
    def _where(chunk: Chunk, feature: Any, column: str) -> Where:
        return Where(chunk.path, chunk.first_row, column, feature.name)

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

