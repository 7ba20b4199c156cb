"""Lists longer than ``maxlen`` are truncated to the documented end (``truncate: recent``, the
default, keeps the last values; ``first`` the first ones), counted per feature, and warned about
once per feature and run, with the count, never once per batch."""

from __future__ import annotations

import warnings

import pytest

from recstack.data.preprocessor import Preprocessor, TruncatedListsWarning
from recstack.data.sources import DataSource
from recstack.errors import SchemaError
from recstack.schema import Schema

from ._files import read_all, write_parquet, write_text


def seq_schema(**options) -> Schema:
    return Schema.from_dict(
        {"label": None, "features": [{"name": "hist", "kind": "sequence", "maxlen": 2, "weights": "pairs", **options}]}
    )


@pytest.fixture
def path(tmp_path) -> str:
    # 5 rows, 3 longer than maxlen=2
    return write_parquet(tmp_path / "t.parquet", {"hist": ["a:1,b:2,c:3", "a:1", "a:1,b:2,c:3", "a:1,b:2", "b:2,c:3,a:1,b:2"]})


def fitted(schema: Schema, path: str, **options) -> tuple[Preprocessor, DataSource, list[warnings.WarningMessage]]:
    source = DataSource(paths=(path,), parquet_batch_rows=2, **options)  # several chunks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = Preprocessor(schema).fit(source)
    return pre, source, [w for w in caught if issubclass(w.category, TruncatedListsWarning)]


def ids_of(pre: Preprocessor, batch, row: int) -> list[str]:
    keys = pre.lookups["hist"].keys
    return [keys[i - 2] for i in batch.sequences["hist"][row].tolist() if i >= 2]


def test_recent_keeps_the_last_values_by_default(path):
    pre, source, _ = fitted(seq_schema(), path)
    batch = read_all(pre, source)
    assert ids_of(pre, batch, 0) == ["b", "c"] and ids_of(pre, batch, 4) == ["a", "b"]
    assert batch.weights["hist"][0].tolist() == [2.0, 3.0]  # weights follow their ids


def test_first_keeps_the_first_values(path):
    pre, source, _ = fitted(seq_schema(truncate="first"), path)
    batch = read_all(pre, source)
    assert ids_of(pre, batch, 0) == ["a", "b"] and ids_of(pre, batch, 4) == ["b", "c"]
    assert batch.weights["hist"][0].tolist() == [1.0, 2.0]


def test_the_fit_warns_once_per_feature_with_the_count(path):
    pre, source, caught = fitted(seq_schema(), path)
    assert len(caught) == 1  # the file is read in several chunks
    message = str(caught[0].message)
    assert "'hist'" in message and "3 row(s)" in message and "maxlen=2" in message and "truncate: recent" in message


def test_transform_counts_truncated_rows_and_warns_once_after_the_pass(path):
    pre, source, _ = fitted(seq_schema(), path)
    loaded = Preprocessor.from_dict(pre.to_dict())  # as predict loads a run's preprocessor
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_all(loaded, source)
        read_all(loaded, source)
        loaded.warn_truncated()
        loaded.warn_truncated()
    assert loaded.truncated_rows == {"hist": 6}
    truncation = [w for w in caught if issubclass(w.category, TruncatedListsWarning)]
    assert len(truncation) == 1 and "6 row(s)" in str(truncation[0].message)


def test_no_warning_when_nothing_is_truncated(tmp_path):
    short = write_text(tmp_path / "s.csv", "hist\na:1\n")
    pre, source, caught = fitted(seq_schema(), short)
    read_all(pre, source)
    assert caught == [] and pre.truncated_rows == {}


def test_truncate_is_validated():
    with pytest.raises(SchemaError, match="truncate must be one of"):
        seq_schema(truncate="oldest")
