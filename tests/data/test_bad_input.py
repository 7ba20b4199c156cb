"""Bad input raises DataError naming the file, the row (1-based, header excluded), the column and what
was expected; ``skip_bad_rows`` drops such rows instead and counts them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import DataError
from recstack.schema import Schema

from ._files import fit, read_all, write_parquet, write_text

SCHEMA = Schema.from_dict(
    {
        "label": "label",
        "features": [
            {"name": "item", "kind": "categorical"},
            {"name": "price", "kind": "numeric"},
            {"name": "tags", "kind": "sequence", "weights": "pairs", "maxlen": 3},
        ],
    }
)
HEADER = "label,item,price,tags\n"
GOOD_ROW = '1,a,2.5,"502:0.34,278:0.09"\n'


def raised(callable_, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as error:
        callable_(*args, **kwargs)
    return error.value


def read(path: str, **options) -> object:
    source = DataSource(paths=(path,), **options)
    return read_all(Preprocessor(SCHEMA).fit(source), source)


def assert_names(error: DataError, path: str, row: int | None, column: str | None) -> None:
    message = str(error)
    assert (error.path, error.row, error.column) == (path, row, column)
    assert f"file {path!r}" in message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column {column!r}" in message


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_missing_column(tmp_path, fmt):
    if fmt == "csv":
        path = write_text(tmp_path / "t.csv", "label,item,tags\n1,a,x:1\n")
    else:
        path = write_parquet(tmp_path / "t.parquet", {"label": [1], "item": ["a"], "tags": ["x:1"]})
    error = raised(read, path)
    assert_names(error, path, None, "price")
    assert "missing column" in str(error)


def test_a_missing_column_in_a_record_batch():
    error = raised(Preprocessor(SCHEMA).fit(iter(())).transform, pa.record_batch({"label": [1], "item": ["a"]}))
    assert error.column == "price" and "missing column" in str(error)


@pytest.mark.parametrize("bad_row", [1, 3, 250])
def test_a_non_number_in_a_numeric_csv_column(tmp_path, bad_row):
    lines = [GOOD_ROW] * 300
    lines[bad_row - 1] = '0,b,cheap,"1:1"\n'
    path = write_text(tmp_path / "t.csv", HEADER + "".join(lines))
    error = raised(read, path, block_bytes=1024)  # many blocks: the row is counted across them
    assert_names(error, path, bad_row, "price")
    assert "expected a number, got 'cheap'" in str(error)


def test_a_non_number_in_a_numeric_parquet_column(tmp_path):
    prices = ["1.5"] * 20
    prices[13] = "n/a"
    path = write_parquet(tmp_path / "t.parquet", {"label": [1] * 20, "item": ["a"] * 20, "price": prices, "tags": ["1:1"] * 20})
    error = raised(read, path, parquet_batch_rows=4)
    assert_names(error, path, 14, "price")
    assert "'n/a'" in str(error)


def test_a_parquet_column_of_the_wrong_type(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", {"label": [1], "item": ["a"], "price": [[1.0]], "tags": ["1:1"]})
    error = raised(read, path)
    assert (error.path, error.column) == (path, "price") and "expected a numeric column" in str(error)


@pytest.mark.parametrize("pair", ["502", "502:", "502:abc", "502:0.3:1"])
def test_a_malformed_id_weight_pair(tmp_path, pair):
    path = write_text(tmp_path / "t.csv", HEADER + GOOD_ROW + f'0,b,1.0,"1:0.5,{pair}"\n')
    error = raised(read, path)
    assert_names(error, path, 2, "tags")
    assert repr(pair) in str(error) and "weight" in str(error)


def test_a_missing_label(tmp_path):
    path = write_text(tmp_path / "t.csv", HEADER + GOOD_ROW + ',b,1.0,"1:1"\n')
    error = raised(read, path)
    assert_names(error, path, 2, "label")


def test_an_empty_csv_file(tmp_path):
    path = write_text(tmp_path / "t.csv", "")
    assert_names(raised(read, path), path, None, None)
    assert "empty" in str(raised(read, path))


def test_a_csv_file_with_only_a_header(tmp_path):
    path = write_text(tmp_path / "t.csv", HEADER)
    error = raised(read, path)
    assert error.path == path and "no data rows" in str(error)


def test_an_empty_parquet_file(tmp_path):
    zero_bytes = write_text(tmp_path / "a.parquet", "")
    assert raised(read, zero_bytes).path == zero_bytes and "empty" in str(raised(read, zero_bytes))
    no_rows = write_parquet(tmp_path / "b.parquet", {"label": pa.array([], pa.int64()), "item": pa.array([], pa.string()),
                                                     "price": pa.array([], pa.float64()), "tags": pa.array([], pa.string())})
    assert raised(read, no_rows).path == no_rows and "empty" in str(raised(read, no_rows))
    not_parquet = write_text(tmp_path / "c.parquet", "label,item\n1,2\n")
    assert raised(read, not_parquet).path == not_parquet


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_wrong_delimiter_with_a_header_names_the_likely_one(tmp_path, delimiter):
    rows = ["label,item,price,tags", '1,a,2.5,"1:1,2:1"', "0,b,1.0,3:1"]
    text = "".join(row.replace(",", delimiter).replace(f'"1:1{delimiter}2:1"', '"1:1,2:1"') + "\n" for row in rows)
    path = write_text(tmp_path / "t.csv", text)
    error = raised(read, path)
    assert_names(error, path, None, "item")
    assert "missing column" in str(error)
    assert f"looks {delimiter!r}-separated; set delimiter: {delimiter!r} (or --delimiter {delimiter!r})" in str(error)


def test_a_quoted_comma_does_not_hide_the_real_delimiter(tmp_path):
    path = write_text(tmp_path / "t.csv", 'label;item;price;tags\n1;"a,b,c,d,e";2.5;1:1\n')
    error = raised(read, path)
    assert "looks ';'-separated" in str(error)


def test_a_one_column_file_without_another_delimiter_asks(tmp_path):
    path = write_text(tmp_path / "t.csv", "label\n1\n")
    error = raised(read, path)
    assert "is the delimiter ',' right?" in str(error) and "looks" not in str(error)


def test_a_wrong_delimiter_in_a_headerless_csv(tmp_path):
    path = write_text(tmp_path / "t.csv", "1\ta\t2.5\t1:1\n")
    error = raised(read, path, header=False, column_names=("label", "item", "price", "tags"))
    assert_names(error, path, 1, "item")
    assert "expected 4 fields, got 1" in str(error)
    assert "looks '\\t'-separated; set delimiter: '\\t' (or --delimiter '\\t')" in str(error)


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("bad_row", [1, 150, 300])
@pytest.mark.parametrize("column", ["item", "tags"])
def test_a_row_that_is_not_utf8_is_named(tmp_path, bad_row, column):
    lines = [GOOD_ROW.encode()] * 300
    lines[bad_row - 1] = b'0,caf\xe9,1.0,"1:1"\n' if column == "item" else b'0,b,1.0,"1:1\xff"\n'
    path = write_bytes(tmp_path / "t.csv", HEADER.encode() + b"".join(lines))
    error = raised(read, path, block_bytes=1024)
    assert_names(error, path, bad_row, column)
    assert "not UTF-8" in str(error) and "--skip-bad-rows" in str(error)


@pytest.mark.parametrize("block_bytes", [1024, 4 << 20])
def test_skip_bad_rows_drops_and_counts_rows_that_are_not_utf8(tmp_path, block_bytes):
    lines = [GOOD_ROW.encode()] * 300
    lines[9] = b'0,caf\xe9,1.0,"1:1"\n'
    lines[200] = b'0,b,1.0,"1:1\xff"\n'
    path = write_bytes(tmp_path / "t.csv", HEADER.encode() + b"".join(lines))
    source = DataSource(paths=(path,), skip_bad_rows=True, block_bytes=block_bytes)
    pre = Preprocessor(SCHEMA).fit(source)
    assert pre.lookups["item"].keys == ["a"]  # fitting skipped the row too
    before = len(source.skipped)
    batch = read_all(pre, source)
    assert len(batch) == 298
    assert len(source.skipped) - before == 2
    assert sorted(source.skipped[before:]) == [10, 201]  # the 1-based data rows dropped


@pytest.mark.parametrize("header", [True, False])
def test_a_row_with_the_wrong_number_of_fields(tmp_path, header):
    text = (HEADER if header else "") + GOOD_ROW * 3 + "1,a,2.5\n" + GOOD_ROW
    path = write_text(tmp_path / "t.csv", text)
    options = {} if header else {"header": False, "column_names": ("label", "item", "price", "tags")}
    error = raised(read, path, **options)
    assert_names(error, path, 4, "tags")
    assert "expected 4 fields, got 3" in str(error)


def test_a_non_number_in_a_float_vector_column(tmp_path):
    schema = Schema.from_dict({"label": "label", "features": [{"name": "u", "kind": "vector", "dim": 2, "columns": ["u_1", "u_2"]}]})
    path = write_text(tmp_path / "t.csv", "1,0.1,0.2\n0,0.3,0.4\n1,0.5,oops\n")
    source = DataSource(paths=(path,), header=False, column_names=("label", "u_1", "u_2"))
    error = raised(Preprocessor(schema).fit, source)
    assert_names(error, path, 3, "u_2")
    assert "'oops'" in str(error)


def test_errors_in_a_glob_name_the_file_that_holds_them(tmp_path):
    write_text(tmp_path / "part-0.csv", HEADER + GOOD_ROW * 2)
    bad = write_text(tmp_path / "part-1.csv", HEADER + GOOD_ROW + '1,a,x,"1:1"\n')
    assert_names(raised(read, str(tmp_path / "part-*.csv")), bad, 2, "price")


def test_a_path_that_matches_nothing(tmp_path):
    assert "no file matches" in str(raised(read, str(tmp_path / "nothing-*.csv")))
    missing = str(tmp_path / "missing.csv")
    assert raised(read, missing).path == missing


def test_skip_bad_rows_drops_and_counts_them(tmp_path):
    rows = [
        GOOD_ROW,
        '0,b,cheap,"1:1"\n',  # not a number
        '1,c,1.0,"1:1,2"\n',  # malformed pair
        "1,d,1.0\n",  # a missing field
        '0,e,3.5,"7:0.5"\n',
    ]
    path = write_text(tmp_path / "t.csv", HEADER + "".join(rows))
    source = DataSource(paths=(path,), skip_bad_rows=True)
    pre = Preprocessor(SCHEMA).fit(source)
    assert pre.lookups["item"].keys == ["a", "e"]  # fitting skips them too
    pre.skipped_rows = 0
    batch = read_all(pre, source)
    assert batch.label.tolist() == [1.0, 0.0]
    assert len(batch) == 2
    assert pre.skipped_rows == 2  # parsed by the preprocessor
    assert len(source.skipped) >= 1  # the short row, dropped by the reader


def test_skip_bad_rows_in_float_vector_columns(tmp_path):
    schema = Schema.from_dict({"label": "label", "features": [{"name": "u", "kind": "vector", "dim": 2, "columns": ["u_1", "u_2"]}]})
    path = write_text(tmp_path / "t.csv", "1,0.1,0.2\n0,0.3,x\n1,0.5,0.6\n")
    pre, source = fit(schema, path, header=False, column_names=("label", "u_1", "u_2"), skip_bad_rows=True)
    batch = read_all(pre, source)
    assert batch.dense["u"].tolist() == [pytest.approx([0.1, 0.2]), pytest.approx([0.5, 0.6])]


def test_unknown_categories_are_never_an_error(tmp_path):
    path = write_text(tmp_path / "t.csv", HEADER + GOOD_ROW)
    pre = Preprocessor(SCHEMA).fit(DataSource(paths=(path,)))
    other = write_text(tmp_path / "other.csv", HEADER + '1,zzz,2.5,"999:1"\n')
    batch = read_all(pre, DataSource(paths=(other,)))
    assert batch.ids["item"].tolist() == [1] and batch.sequences["tags"][0, 0].item() == 1
