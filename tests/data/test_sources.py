"""Readers: CSV / TSV (header or given names, any delimiter) and Parquet, from a file, a list or a glob.

Whatever the format, the same rows give the same batches.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from recstack.data.sources import DataSource, FileFormat
from recstack.errors import ConfigError

from ._files import assert_same_batch, fit, read_all, write_parquet, write_text

SCHEMA = {
    "label": "label",
    "tables": {"item": {"dim": 8}},
    "features": [
        {"name": "user", "kind": "categorical"},
        {"name": "item_id", "kind": "categorical", "table": "item"},
        {"name": "hist", "kind": "sequence", "table": "item", "maxlen": 4, "delimiter": "|"},
        {"name": "price", "kind": "numeric"},
    ],
}
ROWS = {
    "label": [1, 0, 1, 0, 1, 1],
    "user": ["u1", "u2", "u1", "u3", "u2", "u9"],
    "item_id": [10, 11, 10, 12, 13, 10],
    "hist": ["11|12", "", "10|11|12|13|10", "10", "13", "12|12"],
    "price": [1.5, 2.5, None, 4.0, 1.0, 3.0],
}


def csv_text(rows: dict = ROWS, delimiter: str = ",", header: bool = True) -> str:
    names = list(rows)
    lines = [delimiter.join(names)] if header else []
    for i in range(len(rows["label"])):
        lines.append(delimiter.join("" if rows[n][i] is None else str(rows[n][i]) for n in names))
    return "\n".join(lines) + "\n"


def test_csv_and_parquet_give_the_same_batches(tmp_path):
    parquet = write_parquet(tmp_path / "t.parquet", ROWS)
    csv = write_text(tmp_path / "t.csv", csv_text())
    fitted_on_parquet, parquet_source = fit(SCHEMA, parquet)
    fitted_on_csv, csv_source = fit(SCHEMA, csv)
    for pre in (fitted_on_parquet, fitted_on_csv):
        assert_same_batch(read_all(pre, parquet_source), read_all(pre, csv_source))
    assert fitted_on_csv.lookups["user"].keys == fitted_on_parquet.lookups["user"].keys


def test_a_tsv_file_is_read_by_its_suffix_or_format(tmp_path):
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "t.parquet", ROWS)))
    tsv = write_text(tmp_path / "t.tsv", csv_text(delimiter="\t"))
    assert_same_batch(read_all(*fit(SCHEMA, tsv)), expected)
    txt = write_text(tmp_path / "t.txt", csv_text(delimiter="\t"))
    assert_same_batch(read_all(*fit(SCHEMA, txt, format=FileFormat.TSV)), expected)


def test_any_delimiter_can_be_given(tmp_path):
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "t.parquet", ROWS)))
    path = write_text(tmp_path / "t.csv", csv_text(delimiter=";"))
    assert_same_batch(read_all(*fit(SCHEMA, path, delimiter=";")), expected)


def test_a_headerless_csv_with_column_names(tmp_path):
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "t.parquet", ROWS)))
    path = write_text(tmp_path / "t.csv", csv_text(header=False))
    assert_same_batch(read_all(*fit(SCHEMA, path, header=False, column_names=tuple(ROWS))), expected)


def test_column_names_can_replace_a_header(tmp_path):
    renamed = write_text(tmp_path / "t.csv", csv_text().replace("label,user", "y,who", 1))
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "t.parquet", ROWS)))
    assert_same_batch(read_all(*fit(SCHEMA, renamed, header=True, column_names=tuple(ROWS))), expected)


def test_a_headerless_csv_without_names_does_not_lose_its_first_row(tmp_path):
    source = DataSource(paths=(write_text(tmp_path / "t.csv", "1,2\n3,4\n"),), header=False)
    assert source.columns_of(source.paths[0]) == ["f0", "f1"]
    assert sum(c.records.num_rows for c in source.chunks()) == 2


def split_rows(parts: int) -> list[dict]:
    n = len(ROWS["label"])
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [{k: v[a:b] for k, v in ROWS.items()} for a, b in zip(bounds, bounds[1:])]


def test_a_glob_of_several_files_is_read_in_sorted_order(tmp_path):
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "all.parquet", ROWS)))
    for i, part in enumerate(split_rows(3)):
        write_text(tmp_path / f"part-{i}.csv", csv_text(part))
        write_parquet(tmp_path / f"part-{i}.parquet", part)
    for pattern in ("part-*.csv", "part-*.parquet"):
        pre, source = fit(SCHEMA, str(tmp_path / pattern))
        assert source.files() == sorted(str(p) for p in tmp_path.glob(pattern))
        assert_same_batch(read_all(pre, source), expected)


def test_a_list_of_files_in_mixed_formats(tmp_path):
    expected = read_all(*fit(SCHEMA, write_parquet(tmp_path / "all.parquet", ROWS)))
    first, second = split_rows(2)
    paths = write_text(tmp_path / "a.csv", csv_text(first)), write_parquet(tmp_path / "b.parquet", second)
    assert_same_batch(read_all(*fit(SCHEMA, *paths)), expected)


def test_chunks_carry_their_file_and_first_row(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", ROWS)
    source = DataSource(paths=(path,), parquet_batch_rows=4)
    assert [(c.path, c.first_row, c.records.num_rows) for c in source.chunks()] == [(path, 1, 4), (path, 5, 2)]


def test_small_blocks_stream_a_csv_in_several_chunks(tmp_path):
    rows = {"label": [i % 2 for i in range(300)], "user": [f"u{i}" for i in range(300)]}
    path = write_text(tmp_path / "t.csv", csv_text(rows))
    source = DataSource(paths=(path,), block_bytes=512)
    chunks = list(source.chunks(columns=["user"], types={"user": pa.string()}))
    assert len(chunks) > 3
    assert [c.first_row for c in chunks] == [1 + sum(c.records.num_rows for c in chunks[:i]) for i in range(len(chunks))]
    assert sum((c.records.column("user").to_pylist() for c in chunks), []) == rows["user"]


def test_from_config_accepts_a_path_a_list_or_a_mapping(tmp_path):
    assert DataSource.from_config("a.csv").paths == ("a.csv",)
    assert DataSource.from_config(["a.csv", "b.csv"]).paths == ("a.csv", "b.csv")
    source = DataSource.from_config(
        {"path": "train.csv", "delimiter": "\t", "header": False, "column_names": ["a", "b"]}, base_dir=tmp_path
    )
    assert source.paths == (str(tmp_path / "train.csv"),) and source.column_names == ("a", "b")
    with pytest.raises(ConfigError, match="unknown key"):
        DataSource.from_config({"paths": ["a.csv"], "delimter": ","})
    with pytest.raises(ConfigError, match="format"):
        DataSource.from_config({"paths": ["a.csv"], "format": "xlsx"})


def test_a_csv_stream_with_a_python_row_handler_releases_it_when_closed(tmp_path):
    """Arrow frees a reader on its own threads; a Python handler freed there during interpreter
    shutdown aborts the process (exit 134). Closing waits until Arrow has let go of it."""
    import gc
    import weakref

    from recstack.data import csv_stream

    path = write_text(tmp_path / "t.csv", csv_text())
    big = write_text(tmp_path / "big.csv", "a,b\n" + "1,2\n" * 200_000)
    source = DataSource(paths=(big,), skip_bad_rows=True, block_bytes=1 << 12)
    chunks = source.chunks(columns=["a"])
    next(chunks)  # a reader is open, reading ahead
    streams = list(csv_stream._LIVE_STREAMS)
    assert len(streams) == 1
    handler = weakref.ref(streams[0]._handler_ref())
    chunks.close()  # the consumer stops early
    del streams
    gc.collect()
    assert handler() is None and len(csv_stream._LIVE_STREAMS) == 0
    # Strict reading passes no Python handler at all.
    assert read_all(*fit(SCHEMA, path)) is not None and len(csv_stream._LIVE_STREAMS) == 0


def test_the_header_is_read_without_starting_a_reader(tmp_path):
    from recstack.data import csv_stream

    path = write_text(tmp_path / "t.csv", '"a,1",b;c\n1,2\n')
    source = DataSource(paths=(path,), skip_bad_rows=True)
    assert source.columns_of(path) == ["a,1", "b;c"]
    assert len(csv_stream._LIVE_STREAMS) == 0
