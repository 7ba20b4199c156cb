"""Small helpers the data tests share: write a file, read every batch of a source."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema


def write_text(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_parquet(path: Path, columns: Mapping[str, Any], **options: Any) -> str:
    pq.write_table(pa.table(dict(columns)), path, **options)
    return str(path)


def read_all(pre: Preprocessor, source: DataSource, *, with_label: bool = True) -> Batch:
    """Every row of ``source`` as one batch, in file order."""
    chunks = source.chunks(columns=pre.input_columns(with_label=with_label), types=pre.csv_types())
    return Batch.concat(
        [pre.transform(c, skip_bad_rows=source.skip_bad_rows, with_label=with_label) for c in chunks]
    )


def fit(schema: Schema | dict, *paths: str, **source_options: Any) -> tuple[Preprocessor, DataSource]:
    schema = schema if isinstance(schema, Schema) else Schema.from_dict(schema)
    source = DataSource(paths=tuple(paths), **source_options)
    return Preprocessor(schema).fit(source), source


def assert_same_batch(a: Batch, b: Batch) -> None:
    for attr in ("ids", "sequences", "weights", "dense"):
        left, right = getattr(a, attr), getattr(b, attr)
        assert left.keys() == right.keys(), attr
        for name in left:
            assert left[name].dtype == right[name].dtype, name
            assert left[name].equal(right[name]), name
    assert (a.label is None) == (b.label is None)
    if a.label is not None:
        assert a.label.equal(b.label)
