"""Row-level checks made on every chunk before it is fitted on or transformed.

A chunk is *screened* once: rows to skip are dropped (unparseable values with ``skip_bad_rows``,
NaN/inf values of features with ``on_invalid: skip_row``, bad labels with ``skip_bad_rows``),
NaN/inf values of ``on_invalid: error`` features and bad labels raise a DataError, and numeric
columns and the label are parsed once. Errors name the row of the file as read, before any row
was dropped. Every check is vectorised over a whole column.

    #  chunk as read      rows 0 1 2 3      (row 1: price = inf, on_invalid: skip_row)
    #  screened records   rows 0 2 3        rows = [0, 2, 3]: an error on screened row 1 names
    #                                       file row first_row + 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, MutableMapping, Sequence

import numpy as np
import pyarrow as pa

from recstack.data.bad_rows import bad_rows
from recstack.data.columns import Jagged, Where, invalid_numbers, number_kind, split_pairs, split_values, stack_vectors, to_float
from recstack.data.sources import Chunk
from recstack.errors import DataError
from recstack.schema import NumericFeature, Schema, SequenceFeature, VectorFeature, WeightFormat
from recstack.schema.enums import InvalidPolicy, LabelKind
from recstack.schema.targets import Target

__all__ = ["Screened", "check_columns", "screen", "sequence_values", "vector_matrix"]

Counts = MutableMapping[str, int]  # per feature: NaN/inf values filled or rows dropped


@dataclass(frozen=True)
class Screened:
    """A chunk after the row-level checks."""

    chunk: Chunk
    rows: np.ndarray | None  # (B,) offset in the chunk as read of each kept row; None: every row kept
    numbers: dict[str, np.ndarray]  # numeric feature name -> (B,) float64, NaN = missing (or filled)
    labels: dict[str, np.ndarray] | None  # target name -> (B,) float64; None: labels not read
    skipped: int = 0  # rows dropped

    def where(self, feature: Any, column: str) -> Where:
        name = column if feature is None else feature.name
        return Where(self.chunk.path, self.chunk.first_row, column, name, self.rows)


def check_columns(chunk: Chunk, features: Sequence[Any]) -> None:
    """DataError naming the first column a feature reads that the chunk lacks."""
    names = chunk.records.schema.names
    for feature in features:
        for column in feature.source_columns:
            if column not in names:
                raise DataError("missing column", path=chunk.path, column=column, feature=feature.name)


def check_targets(chunk: Chunk, schema: Schema) -> None:
    """DataError naming the first target whose column the chunk lacks (and the file)."""
    names = chunk.records.schema.names
    for target in schema.targets:
        if target.name not in names:
            if len(schema.targets) == 1:
                raise DataError(f"the label column {target.name!r} is missing", path=chunk.path, column=target.name)
            raise DataError(
                f"target {target.name!r}: its column is missing (the schema's targets: {', '.join(schema.target_names)})",
                path=chunk.path,
                column=target.name,
            )


def screen(
    chunk: Chunk,
    schema: Schema,
    features: Sequence[Any],
    *,
    skip_bad_rows: bool,
    with_label: bool,
    invalid_counts: Counts,
) -> Screened:
    """``chunk`` with its rows to skip dropped (their number in ``Screened.skipped``), numbers
    and the label parsed; raises DataError on NaN/inf (``on_invalid: error``) and bad labels."""
    records = chunk.records
    rows: np.ndarray | None = None
    skipped = 0
    if skip_bad_rows:
        bad = bad_rows(schema, records)
        if bad.any():
            skipped = int(bad.sum())
            rows = np.flatnonzero(~bad)
            records = records.filter(pa.array(~bad))
    screened = Screened(Chunk(records, chunk.path, chunk.first_row), rows, {}, None)
    drop = np.zeros(records.num_rows, dtype=bool)
    numbers: dict[str, np.ndarray] = {}
    for feature in features:
        if isinstance(feature, NumericFeature):
            where = screened.where(feature, feature.column)
            column = records.column(feature.column)
            values = to_float(column, where)
            invalid = invalid_numbers(column, values)
            if invalid is not None:
                if feature.on_invalid is InvalidPolicy.ERROR:
                    first = int(np.flatnonzero(invalid)[0])
                    raise where.error(_invalid_problem("value", values[first]), first)
                _count(invalid_counts, feature.name, int(invalid.sum()))
                if feature.on_invalid is InvalidPolicy.FILL:
                    values = np.where(invalid, np.nan, values)  # missing: normalisation fills it
                else:
                    drop |= invalid
            numbers[feature.name] = values
        elif getattr(feature, "on_invalid", None) is InvalidPolicy.SKIP_ROW:
            drop |= _invalid_rows(screened, feature, invalid_counts)
    labels: dict[str, np.ndarray] | None = None
    if with_label and schema.targets:
        check_targets(chunk, schema)
        labels = {}
        for target in schema.targets:
            labels[target.name], bad_label = _labels(screened, schema, target, raise_on_bad=not skip_bad_rows)
            drop |= bad_label
    if drop.any():
        keep = ~drop
        skipped += int(drop.sum())
        numbers = {name: values[keep] for name, values in numbers.items()}
        labels = None if labels is None else {name: values[keep] for name, values in labels.items()}
        rows = np.flatnonzero(keep) if rows is None else rows[keep]
        records = records.filter(pa.array(keep))
    return Screened(Chunk(records, chunk.path, chunk.first_row), rows, numbers, labels, skipped)


def sequence_values(
    screened: Screened, feature: SequenceFeature, invalid_counts: Counts, *, check: bool = True
) -> tuple[Jagged, np.ndarray | None]:
    """The list values ``(N,)`` with their row lengths ``(B,)``, and float32 weights ``(N,)``
    when the feature has them (with ``check``, a NaN/inf weight raises, or becomes 0 with
    ``on_invalid: fill``)."""
    records = screened.chunk.records
    where = screened.where(feature, feature.column)
    jagged = split_values(records.column(feature.column), feature.delimiter, where)
    weights = None
    if feature.weights is WeightFormat.PAIRS:
        jagged, weights = split_pairs(jagged, feature.pair_separator, where)
    elif feature.weights is WeightFormat.COLUMN:
        where = screened.where(feature, feature.weight_column or "")
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
            weights = _apply_invalid(feature, where, weights, invalid, _value_rows(jagged), "weight", invalid_counts)
    return jagged, weights


def vector_matrix(screened: Screened, feature: VectorFeature, invalid_counts: Counts) -> np.ndarray:
    """``(B, D)`` float32; a missing element (null, empty) is 0, a NaN/inf one follows
    ``on_invalid`` (``fill``: 0)."""
    records = screened.chunk.records
    if feature.columns:
        parts, invalid_parts = [], []
        for column in feature.columns:
            values = to_float(records.column(column), screened.where(feature, column))
            invalid = invalid_numbers(records.column(column), values)
            parts.append(values)
            invalid_parts.append(np.zeros(len(values), dtype=bool) if invalid is None else invalid)
        matrix = np.column_stack(parts).astype(np.float32)  # (B, D)
        invalid = np.column_stack(invalid_parts)  # (B, D)
        first = int(invalid.reshape(-1).argmax())  # row-major: the first row's first bad element
        where = screened.where(feature, feature.columns[first % len(feature.columns)])
    else:
        where = screened.where(feature, feature.column)
        matrix = stack_vectors(records.column(feature.column), feature.dim, feature.delimiter, where)  # (B, D)
        invalid = ~np.isfinite(matrix)  # a list holds no missing element: split_values dropped nulls
    if invalid.any():
        rows = np.broadcast_to(np.arange(len(matrix))[:, None], matrix.shape)  # (B, D) row of each element
        flat = _apply_invalid(feature, where, matrix.reshape(-1), invalid.reshape(-1), rows.reshape(-1), "value", invalid_counts)
        matrix = flat.reshape(matrix.shape)
    if feature.columns:
        matrix = np.nan_to_num(matrix, nan=0.0)  # missing elements
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not matrix.flags.writeable:  # a zero-copy view of Arrow's buffer: tensors must own theirs
        matrix = matrix.copy()
    return matrix


def _apply_invalid(
    feature: Any, where: Where, values: np.ndarray, invalid: np.ndarray, rows: np.ndarray, what: str, invalid_counts: Counts
) -> np.ndarray:
    """``values`` ``(N,)`` with its NaN/inf entries (``invalid``, on chunk rows ``rows``) raised
    as a DataError (``on_invalid: error``) or replaced by 0 (``fill``); ``skip_row`` rows were
    dropped by ``screen`` already."""
    first = int(np.flatnonzero(invalid)[0])
    if feature.on_invalid is InvalidPolicy.ERROR:
        raise where.error(_invalid_problem(what, values[first]), int(rows[first]))
    _count(invalid_counts, feature.name, int(invalid.sum()))
    return np.where(invalid, np.zeros((), values.dtype), values)


def _invalid_rows(screened: Screened, feature: VectorFeature | SequenceFeature, invalid_counts: Counts) -> np.ndarray:
    """``(B,)`` bool: rows where a vector element or a sequence weight is NaN/inf (counted)."""
    records = screened.chunk.records
    bad = np.zeros(records.num_rows, dtype=bool)
    if isinstance(feature, VectorFeature) and feature.columns:
        for column in feature.columns:
            values = to_float(records.column(column), screened.where(feature, column))
            invalid = invalid_numbers(records.column(column), values)
            if invalid is not None:
                bad |= invalid
    elif isinstance(feature, VectorFeature):
        where = screened.where(feature, feature.column)
        matrix = stack_vectors(records.column(feature.column), feature.dim, feature.delimiter, where)
        bad = ~np.isfinite(matrix).all(axis=1)
    elif isinstance(feature, SequenceFeature) and feature.weights is not WeightFormat.NONE:
        jagged, weights = sequence_values(screened, feature, invalid_counts, check=False)
        assert weights is not None
        bad[_value_rows(jagged)[~np.isfinite(weights)]] = True
    _count(invalid_counts, feature.name, int(bad.sum()))
    return bad


def _labels(screened: Screened, schema: Schema, target: Target, *, raise_on_bad: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(B,)`` float64 labels of ``target`` and ``(B,)`` bool rows with a bad one (missing, NaN,
    inf, or not 0/1 for a binary target); with ``raise_on_bad`` the first bad label raises instead."""
    column = screened.chunk.records.column(target.name)
    where = screened.where(None, target.name)
    values = to_float(column, where)
    binary = target.kind is LabelKind.BINARY
    bad = ~((values == 0) | (values == 1) if binary else np.isfinite(values))
    if raise_on_bad and bad.any():
        first = int(np.flatnonzero(bad)[0])
        if len(schema.targets) == 1:  # the schema's label (label_kind)
            what = "the label"
            expected = "0 or 1 (label_kind: binary; 'real' takes any finite number)" if binary else "a finite number (label_kind: real)"
        else:
            what = f"target {target.name!r}: the label"
            expected = "0 or 1 (kind: binary; 'regression' takes any finite number)" if binary else "a finite number (kind: regression)"
        value = values[first]
        if np.isnan(value) and invalid_numbers(column.slice(first, 1), values[first : first + 1]) is None:
            raise where.error(f"{what} is missing; expected {expected}", first)
        found = number_kind(value) if not np.isfinite(value) else repr(column[first].as_py())
        raise where.error(f"{what} is {found}; expected {expected}", first)
    return values, bad


def _value_rows(jagged: Jagged) -> np.ndarray:
    """``(N,)`` row of each flat value."""
    return np.repeat(np.arange(len(jagged.lengths)), jagged.lengths)


def _count(counts: Counts, name: str, count: int) -> None:
    if count:
        counts[name] = counts.get(name, 0) + count


def _invalid_problem(what: str, value: float) -> str:
    return (
        f"{number_kind(float(value))} {what} (on_invalid: error); set the feature's on_invalid to "
        "'fill' (use its fill value) or 'skip_row' (drop the row) to accept such values"
    )
