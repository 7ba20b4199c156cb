"""Labels are checked as files are read, by the fit and by every transform: with the schema's
``label_kind: binary`` (the default) a label is 0 or 1; with ``real`` any finite number. A bad
label names the file, the 1-based row, the label column, the value found and what was expected;
``skip_bad_rows`` drops such rows instead and counts them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from recstack.data.sources import DataSource
from recstack.errors import DataError, SchemaError
from recstack.schema import Schema

from ._files import fit, read_all, write_parquet, write_text


def schema(**top) -> Schema:
    return Schema.from_dict({"label": "click", "features": [{"name": "item", "kind": "categorical"}], **top})


@pytest.mark.parametrize("value, found", [("2", "'2'"), ("-1", "'-1'"), ("0.5", "'0.5'"), ("nan", "NaN"), ("inf", "inf")])
def test_the_fit_rejects_a_label_that_is_not_0_or_1(tmp_path, value, found):
    path = write_text(tmp_path / "t.csv", f"item,click\na,1\nb,0\nc,{value}\n")
    with pytest.raises(DataError) as error:
        fit(schema(), path)
    assert (error.value.path, error.value.row, error.value.column) == (path, 3, "click")
    message = str(error.value)
    assert f"the label is {found}" in message and "expected 0 or 1" in message


def test_a_missing_label_is_named_as_missing(tmp_path):
    path = write_text(tmp_path / "t.csv", "item,click\na,1\nb,\n")
    with pytest.raises(DataError, match="row 2.*the label is missing"):
        fit(schema(), path)


def test_parquet_labels_are_checked_too(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", {"item": ["a", "b"], "click": pa.array([1.0, 3.0])})
    with pytest.raises(DataError) as error:
        fit(schema(), path)
    assert (error.value.row, error.value.column) == (2, "click") and "the label is 3.0" in str(error.value)


def test_transform_checks_labels_of_new_files(tmp_path):
    train = write_text(tmp_path / "train.csv", "item,click\na,1\nb,0\n")
    test = write_text(tmp_path / "test.csv", "item,click\na,1\nb,5\n")
    pre, _ = fit(schema(), train)
    with pytest.raises(DataError) as error:
        read_all(pre, DataSource(paths=(test,)))
    assert (error.value.path, error.value.row, error.value.column) == (test, 2, "click")


def test_predicting_without_labels_does_not_read_them(tmp_path):
    train = write_text(tmp_path / "train.csv", "item,click\na,1\nb,0\n")
    pre, _ = fit(schema(), train)
    batch = pre.transform(pa.record_batch({"item": ["a"], "click": ["7"]}), with_label=False)
    assert batch.label is None


def test_a_fit_source_without_the_label_column_still_fits(tmp_path):
    catalogue = write_text(tmp_path / "items.csv", "item\na\nb\n")
    pre, _ = fit(schema(), catalogue)
    assert sorted(pre.lookups["item"].keys) == ["a", "b"]


def test_real_labels_take_any_finite_number(tmp_path):
    path = write_text(tmp_path / "t.csv", "item,click\na,2.5\nb,0\n")
    pre, source = fit(schema(label_kind="real"), path)
    assert read_all(pre, source).label.tolist() == [2.5, 0.0]
    bad = write_text(tmp_path / "bad.csv", "item,click\na,inf\n")
    with pytest.raises(DataError, match="the label is inf; expected a finite number"):
        fit(schema(label_kind="real"), bad)


def test_skip_bad_rows_drops_rows_with_bad_labels_and_counts_them(tmp_path):
    path = write_text(tmp_path / "t.csv", "item,click\na,1\nb,2\nc,0\nd,nan\n")
    pre, source = fit(schema(), path, skip_bad_rows=True)
    assert sorted(pre.lookups["item"].keys) == ["a", "c"]
    pre.skipped_rows = 0
    batch = read_all(pre, source)
    assert batch.label.tolist() == [1.0, 0.0] and pre.skipped_rows == 2


def test_label_kind_is_validated_and_saved():
    with pytest.raises(SchemaError, match="label_kind must be one of"):
        schema(label_kind="integer")
    assert Schema.from_dict(schema(label_kind="real").to_dict()).label_kind.value == "real"
    assert schema().label_kind.value == "binary"
