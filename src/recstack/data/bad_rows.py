"""Rows a schema cannot read: unparseable numbers, malformed ``id:weight`` pairs, bad labels.

``DataSource(skip_bad_rows=True)`` and ``Preprocessor.transform(skip_bad_rows=True)`` drop these
rows instead of raising on them; every check is vectorised over a whole column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.columns import Where, bad_number_rows, split_values
from recstack.schema import NumericFeature, Schema, SequenceFeature, VectorFeature, WeightFormat

__all__ = ["bad_rows", "skipped_rows"]


def bad_rows(schema: Schema, records: pa.RecordBatch) -> np.ndarray:
    """``(rows,)`` bool, True where a numeric, vector, pair-weighted or label column will not parse.

    Columns the record batch lacks are not checked (transforming reports them as missing).
    """
    bad = np.zeros(records.num_rows, dtype=bool)
    for feature in schema.features:
        if isinstance(feature, NumericFeature) and feature.column in records.schema.names:
            bad |= bad_number_rows(records.column(feature.column))
        elif isinstance(feature, VectorFeature) and feature.columns:
            for column in feature.columns:
                if column in records.schema.names:
                    bad |= bad_number_rows(records.column(column))
        elif isinstance(feature, SequenceFeature) and feature.weights is WeightFormat.PAIRS and feature.column in records.schema.names:
            bad |= _bad_pair_rows(records.column(feature.column), feature)
    if schema.label and schema.label in records.schema.names:
        bad |= bad_number_rows(records.column(schema.label))
    return bad


def _bad_pair_rows(column: pa.Array, feature: SequenceFeature) -> np.ndarray:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return np.zeros(len(column), dtype=bool)
    where = Where("<records>", 1, feature.column, feature.name)
    jagged = split_values(column, feature.delimiter, where)
    parts = pc.split_pattern(jagged.values, feature.pair_separator, max_splits=1)
    malformed = pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2
    weights = pc.list_element(pc.if_else(pa.array(malformed), pa.scalar(["", "0"], parts.type), parts), 1)
    malformed |= bad_number_rows(weights) | pc.equal(pc.utf8_trim_whitespace(weights), "").to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(column)), jagged.lengths)
    bad = np.zeros(len(column), dtype=bool)
    bad[rows[malformed]] = True
    return bad


def skipped_rows(preprocessor: Any, source: Any) -> int:
    """Rows dropped so far in this process by ``skip_bad_rows``: unparseable values dropped by
    ``preprocessor`` plus rows with the wrong number of fields dropped by ``source``'s CSV reader.

    Counts made inside DataLoader worker processes stay there; compare two calls around one pass.
    """
    return int(preprocessor.skipped_rows) + len(source.skipped)
