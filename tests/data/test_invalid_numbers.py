"""NaN and +-inf numbers: each numeric-like feature's ``on_invalid`` decides, while fitting and
transforming. ``error`` (the default) names the file, the 1-based row, the column and the kind of
value; ``fill`` uses the feature's fill value; ``skip_row`` drops the row and counts it. A missing
value (null, empty) is not invalid: it keeps getting the fill."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import DataError, SchemaError
from recstack.schema import Schema

from ._files import fit, read_all, write_parquet, write_text


def numeric_schema(**options) -> Schema:
    return Schema.from_dict({"label": "label", "features": [{"name": "price", "kind": "numeric", **options}]})


@pytest.mark.parametrize("text, kind", [("inf", "inf"), ("-inf", "-inf"), ("nan", "NaN"), ("NaN", "NaN"), (" Infinity", "inf")])
def test_a_non_finite_csv_value_is_an_error_naming_file_row_column_and_kind(tmp_path, text, kind):
    path = write_text(tmp_path / "t.csv", f"label,price\n1,2.0\n0,\n1,{text}\n0,3.0\n")
    with pytest.raises(DataError) as error:
        fit(numeric_schema(), path)
    assert (error.value.path, error.value.row, error.value.column) == (path, 3, "price")
    assert f"{kind} value" in str(error.value) and "on_invalid" in str(error.value)


def test_a_non_finite_parquet_value_is_an_error_but_a_null_is_missing(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", {"label": [1, 0, 1], "price": pa.array([1.0, None, np.inf])})
    with pytest.raises(DataError) as error:
        fit(numeric_schema(), path)
    assert (error.value.row, error.value.column) == (3, "price") and "inf value" in str(error.value)


def test_transform_checks_too_with_the_fitted_preprocessor(tmp_path):
    train = write_text(tmp_path / "train.csv", "label,price\n1,2.0\n0,4.0\n")
    test = write_text(tmp_path / "test.csv", "label,price\n1,2.0\n0,1e400\n")  # overflows to inf
    pre, _ = fit(numeric_schema(), train)
    with pytest.raises(DataError) as error:
        read_all(pre, DataSource(paths=(test,)))
    assert (error.value.path, error.value.row, error.value.column) == (test, 2, "price")


@pytest.mark.parametrize("declared_fill, expected_fill", [(None, 3.0), (10.0, 10.0)])
def test_fill_uses_the_declared_fill_or_the_training_mean(tmp_path, declared_fill, expected_fill):
    path = write_text(tmp_path / "t.csv", "label,price\n1,2.0\n0,inf\n1,4.0\n0,nan\n")
    pre, source = fit(numeric_schema(on_invalid="fill", transform="none", fill=declared_fill), path)
    normalizer = pre.normalizers["price"]
    assert normalizer.fill == expected_fill  # the fit ignored inf and NaN: mean of 2 and 4
    assert read_all(pre, source).dense["price"].tolist() == [2.0, expected_fill, 4.0, expected_fill]
    assert pre.invalid_values["price"] == 4  # two values, counted by the fit and by the transform


def test_fill_keeps_standardisation_finite(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,price\n1,2.0\n0,inf\n1,4.0\n")
    pre, source = fit(numeric_schema(on_invalid="fill"), path)
    normalizer = pre.normalizers["price"]
    assert (normalizer.center, normalizer.scale) == (3.0, 1.0)
    assert np.isfinite(read_all(pre, source).dense["price"].numpy()).all()


def test_skip_row_drops_the_row_everywhere_and_counts_it(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,item,price\n1,a,2.0\n0,b,inf\n1,c,4.0\n")
    schema = Schema.from_dict(
        {"label": "label", "features": [{"name": "item", "kind": "categorical"}, {"name": "price", "kind": "numeric", "on_invalid": "skip_row"}]}
    )
    pre, source = fit(schema, path)
    assert sorted(pre.lookups["item"].keys) == ["a", "c"]  # the skipped row's item was never counted
    assert pre.normalizers["price"].center == 3.0
    pre.skipped_rows = 0
    batch = read_all(pre, source)
    assert batch.label.tolist() == [1.0, 1.0] and len(batch.ids["item"]) == 2
    assert pre.skipped_rows == 1


def test_rows_after_a_skipped_row_keep_their_file_row_number_in_errors(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,a,b\n1,inf,1\n0,1,2\n1,2,nan\n")
    schema = Schema.from_dict(
        {"label": "label", "features": [{"name": "a", "kind": "numeric", "on_invalid": "skip_row"}, {"name": "b", "kind": "numeric"}]}
    )
    with pytest.raises(DataError) as error:
        fit(schema, path)
    assert (error.value.row, error.value.column) == (3, "b")


def test_vector_elements_follow_on_invalid(tmp_path):
    columns = {"label": [1, 0, 1], "emb": pa.array([[0.5, 1.0], [np.nan, 2.0], [1.0, 1.0]], pa.list_(pa.float32()))}
    path = write_parquet(tmp_path / "t.parquet", columns)

    def schema(policy: str) -> dict:
        return {"label": "label", "features": [{"name": "emb", "kind": "vector", "dim": 2, "on_invalid": policy}]}

    pre, source = fit(schema("error"), path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert (error.value.row, error.value.column) == (2, "emb") and "NaN value" in str(error.value)
    pre, source = fit(schema("fill"), path)
    assert read_all(pre, source).dense["emb"].tolist() == [[0.5, 1.0], [0.0, 2.0], [1.0, 1.0]]
    pre, source = fit(schema("skip_row"), path)
    assert read_all(pre, source).dense["emb"].tolist() == [[0.5, 1.0], [1.0, 1.0]]


def test_multi_column_vectors_tell_missing_from_inf(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,u1,u2\n1,0.5,\n0,-inf,1\n")
    schema = {"label": "label", "features": [{"name": "u", "kind": "vector", "dim": 2, "columns": ["u1", "u2"]}]}
    pre, source = fit(schema, path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert (error.value.row, error.value.column) == (2, "u1") and "-inf value" in str(error.value)
    filled = {**schema, "features": [{**schema["features"][0], "on_invalid": "fill"}]}
    pre, source = fit(filled, path)
    assert read_all(pre, source).dense["u"].tolist() == [[0.5, 0.0], [0.0, 1.0]]  # missing and -inf: 0


@pytest.mark.parametrize("policy, expected", [("fill", [[1.0, 0.0], [0.5, 0.0]]), ("skip_row", [[0.5, 0.0]])])
def test_sequence_weights_follow_on_invalid(tmp_path, policy, expected):
    path = write_text(tmp_path / "t.csv", 'label,tags\n1,"a:1,b:inf"\n0,a:0.5\n')
    schema = {"label": "label", "features": [{"name": "tags", "kind": "sequence", "weights": "pairs", "maxlen": 2, "on_invalid": policy}]}
    pre, source = fit(schema, path)
    assert read_all(pre, source).weights["tags"].tolist() == expected
    pre, source = fit({**schema, "features": [{**schema["features"][0], "on_invalid": "error"}]}, path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert (error.value.row, error.value.column) == (1, "tags") and "inf weight" in str(error.value)


def test_on_invalid_is_validated():
    with pytest.raises(SchemaError, match="on_invalid must be one of"):
        numeric_schema(on_invalid="ignore")
    with pytest.raises(SchemaError, match="weights"):
        Schema.from_dict({"features": [{"name": "s", "kind": "sequence", "on_invalid": "fill"}]})


def test_on_invalid_survives_the_saved_preprocessor(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,price\n1,2.0\n0,inf\n")
    pre, _ = fit(numeric_schema(on_invalid="skip_row"), path)
    pre.save(tmp_path / "pre.json")
    assert Preprocessor.load(tmp_path / "pre.json").schema == pre.schema


def test_a_multi_column_vector_error_names_the_column_of_the_first_bad_row(tmp_path):
    path = write_text(tmp_path / "t.csv", "label,u1,u2\n1,0.5,inf\n0,inf,1\n")
    schema = {"label": "label", "features": [{"name": "u", "kind": "vector", "dim": 2, "columns": ["u1", "u2"]}]}
    pre, source = fit(schema, path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert (error.value.row, error.value.column) == (1, "u2")
