"""Vector files: every format round-trips exactly, bad files name the file and the line/row."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.errors import ConfigError, DataError
from recstack.pretrain import (
    DuplicateIdError,
    VectorFormat,
    VectorTable,
    infer_format,
    npy_paths,
    read_vectors,
    write_vectors,
)


@pytest.fixture()
def table() -> VectorTable:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 5)).astype(np.float32)
    # Values that a careless text format would not round-trip.
    vectors[0, :4] = [1e-30, 3.4e38, -0.0, 0.1]
    vectors[1, :2] = [np.nan, -np.inf]
    ids = ["item_1", "b\"quoted'", "ünïcode", "42", "7", "x-y.z"]
    return VectorTable(ids=ids, vectors=vectors)


def assert_same(read: VectorTable, expected: VectorTable) -> None:
    assert read.ids == expected.ids
    assert read.vectors.dtype == np.float32 and read.vectors.shape == expected.vectors.shape
    np.testing.assert_array_equal(read.vectors, expected.vectors)  # NaN == NaN here
    assert np.array_equal(np.signbit(read.vectors), np.signbit(expected.vectors))


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["items.npy", "vectors.npy", "items.parquet", "items.vec", "items.txt", "items.w2v"])
def test_each_format_round_trips_ids_and_values_exactly(tmp_path: Path, table: VectorTable, name: str) -> None:
    written = write_vectors(tmp_path / name, table)
    assert written == tmp_path / name
    assert_same(read_vectors(tmp_path / name), table)


def test_npy_folder_and_prefix_forms(tmp_path: Path, table: VectorTable) -> None:
    write_vectors(tmp_path / "folder", table, VectorFormat.NPY)
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["ids.txt", "vectors.npy"]
    assert_same(read_vectors(tmp_path / "folder"), table)
    assert_same(read_vectors(tmp_path / "folder" / "vectors.npy"), table)

    write_vectors(tmp_path / "items.npy", table)
    assert (tmp_path / "items.ids.txt").read_text(encoding="utf-8").splitlines() == table.ids
    assert npy_paths(tmp_path / "items") == (tmp_path / "items.npy", tmp_path / "items.ids.txt")
    assert_same(read_vectors(tmp_path / "items"), table)  # the prefix


def test_format_is_inferred_from_the_suffix(tmp_path: Path) -> None:
    assert infer_format("a/b.parquet") is VectorFormat.PARQUET
    assert infer_format("a/b.VEC") is VectorFormat.WORD2VEC
    assert infer_format("a/b.npy") is VectorFormat.NPY
    with pytest.raises(ConfigError, match="b.bin"):
        infer_format(tmp_path / "b.bin")
    with pytest.raises(ConfigError):
        write_vectors(tmp_path / "b.bin", VectorTable(ids=["a"], vectors=np.ones((1, 2))))


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    table = VectorTable(ids=[10, 20], vectors=np.eye(2))
    assert table.ids == ["10", "20"]
    path = tmp_path / "int_ids.parquet"
    pq.write_table(pa.table({"id": pa.array([3, 4], pa.int64()), "vector": [[1.0, 2.0], [3.0, 4.0]]}), path)
    read = read_vectors(path)
    assert read.ids == ["3", "4"]
    np.testing.assert_array_equal(read.vectors, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "vector_type", [pa.list_(pa.float32()), pa.large_list(pa.float64()), pa.list_(pa.float32(), 2)]
)
def test_parquet_accepts_list_large_list_and_fixed_size_list(tmp_path: Path, vector_type: pa.DataType) -> None:
    path = tmp_path / "v.parquet"
    vectors = pa.array([[1.5, 2.0], [3.0, -4.25]], type=vector_type)
    pq.write_table(pa.table({"id": ["a", "b"], "vector": vectors, "extra": [1, 2]}), path)
    read = read_vectors(path)
    assert read.ids == ["a", "b"]
    np.testing.assert_array_equal(read.vectors, np.array([[1.5, 2.0], [3.0, -4.25]], dtype=np.float32))


def test_word2vec_text_from_gensim_and_fasttext_style_files(tmp_path: Path) -> None:
    gensim = pytest.importorskip("gensim")
    keyed = gensim.models.KeyedVectors(vector_size=3)
    keyed.add_vectors(["apple", "pear"], np.array([[0.1, -0.2, 0.3], [1.0, 2.0, 3.5]], dtype=np.float32))
    keyed.save_word2vec_format(str(tmp_path / "gensim.txt"))
    read = read_vectors(tmp_path / "gensim.txt")
    assert read.ids == ["apple", "pear"]
    np.testing.assert_allclose(read.vectors, keyed.vectors)

    # Ours loads in gensim.
    write_vectors(tmp_path / "ours.vec", read)
    loaded = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "ours.vec"))
    assert loaded.index_to_key == read.ids
    np.testing.assert_array_equal(loaded.vectors, read.vectors)

    # fastText: trailing spaces, CRLF line ends, a blank last line.
    (tmp_path / "ft.vec").write_bytes(b"2 3\r\nsun 1 2 3 \r\nmoon 4 5 6 \r\n\r\n")
    read = read_vectors(tmp_path / "ft.vec")
    assert read.ids == ["sun", "moon"]
    np.testing.assert_array_equal(read.vectors, [[1, 2, 3], [4, 5, 6]])


def test_word2vec_text_without_header(tmp_path: Path) -> None:
    (tmp_path / "glove.txt").write_text("the 0.5 0.25\nof -1 2e-3\n")
    read = read_vectors(tmp_path / "glove.txt")
    assert read.ids == ["the", "of"] and read.dim == 2
    # Integer ids with 1-dim vectors: "3 1" is data, not a header, as 2 lines (not 3) follow.
    (tmp_path / "one_dim.txt").write_text("3 1\n8 2\n9 4\n")
    read = read_vectors(tmp_path / "one_dim.txt")
    assert read.ids == ["3", "8", "9"]
    np.testing.assert_array_equal(read.vectors, [[1], [2], [4]])
    (tmp_path / "one_dim_header.txt").write_text("2 1\n8 2\n9 4\n")
    assert read_vectors(tmp_path / "one_dim_header.txt").ids == ["8", "9"]


# --- bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("3 2\na 1 2\nb 1\nc 1 2\n", r"line 3: expected 2 values after the id, got 1"),
        ("a 1 2\nb 1 2 3\n", r"line 2: expected 2 values after the id, got 3"),
        ("2 2\na 1 2\nb 1 abc\n", r"line 3: non-numeric value 'abc'"),
        ("a 1 2\nb 1  2\n", r"line 2: an empty value: separate fields by single spaces"),
        ("a 1 2\n 1 2\n", r"line 2: empty id"),
        ("a 1 2 \nb 1 2\n", r"line 2: trailing space differs"),
        ("3 2\na 1 2\nb 3 4\na 5 6\n", r"line 4: duplicate id 'a' \(first on line 2\)"),
        ("5 2\na 1 2\nb 3 4\n", r"line 1: header says 5 vectors, found 2"),
        ("", r"empty file"),
        ("\n\n", r"empty file"),
        ("2 3\n", r"empty file"),
    ],
)
def test_bad_word2vec_files_name_the_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.vec"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as caught:
        read_vectors(path)
    assert str(path) in str(caught.value)


def test_bad_parquet_files_name_the_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "vector": [[1.0, 2.0], [3.0], [5.0, 6.0]]}), path)
    with pytest.raises(DataError, match=r"row 2.*expected 2 values, got 1") as caught:
        read_vectors(path)
    assert str(path) in str(caught.value)

    pq.write_table(pa.table({"id": ["a", "b", "a"], "vector": [[1.0], [2.0], [3.0]]}), path)
    with pytest.raises(DataError, match=r"row 3.*duplicate id 'a' \(first at row 1\)"):
        read_vectors(path)

    pq.write_table(pa.table({"id": ["a", "b"], "vector": [[1.0], None]}), path)
    with pytest.raises(DataError, match=r"row 2.*null vector"):
        read_vectors(path)

    pq.write_table(pa.table({"key": ["a"], "embedding": [[1.0]]}), path)
    with pytest.raises(DataError, match=r"expected columns 'id' and 'vector'"):
        read_vectors(path)

    pq.write_table(pa.table({"id": pa.array([], pa.string()), "vector": pa.array([], pa.list_(pa.float32()))}), path)
    with pytest.raises(DataError, match="empty file"):
        read_vectors(path)


def test_bad_npy_files_name_the_file_and_line(tmp_path: Path) -> None:
    np.save(tmp_path / "vectors.npy", np.ones((3, 2), dtype=np.float32))
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    with pytest.raises(DataError, match=r"2 ids in .*ids.txt.* but 3 vector rows"):
        read_vectors(tmp_path)
    ids.write_text("a\n\nc\n")
    with pytest.raises(DataError, match=r"ids.txt.*line 2: empty id"):
        read_vectors(tmp_path)
    ids.write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"ids.txt.*line 3: duplicate id 'a' \(first on line 1\)"):
        read_vectors(tmp_path)
    np.save(tmp_path / "vectors.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(DataError, match=r"vectors.npy.*2-D"):
        read_vectors(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_vectors(tmp_path / "missing.parquet")


# --- writing -----------------------------------------------------------------------------


def test_writes_replace_atomically_and_leave_no_temporary_files(tmp_path: Path, table: VectorTable) -> None:
    path = tmp_path / "items.vec"
    write_vectors(path, table)
    before = path.read_bytes()
    spaced = VectorTable(ids=["has space"], vectors=np.ones((1, 5)))
    with pytest.raises(ValueError, match=r"items.vec': word2vec ids cannot be empty or hold whitespace: 'has space'"):
        write_vectors(path, spaced)
    assert path.read_bytes() == before  # the failed write left the old file whole
    write_vectors(path, VectorTable(ids=["new"], vectors=np.ones((1, 5))))
    assert read_vectors(path).ids == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["items.vec"]


def test_an_empty_table_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        write_vectors(tmp_path / "x.parquet", VectorTable(ids=[], vectors=np.zeros((0, 3))))


# --- the table ---------------------------------------------------------------------------


def test_lookup_marks_unknown_ids_and_gives_them_zeros(table: VectorTable) -> None:
    vectors, found = table.lookup(["7", "nope", 42, "item_1"])
    assert vectors.shape == (4, 5) and vectors.dtype == np.float32
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(vectors[0], table.vectors[4])
    np.testing.assert_array_equal(vectors[1], np.zeros(5))
    np.testing.assert_array_equal(vectors[2], table.vectors[3])
    assert table.rows(pa.array(["ünïcode", None, "7"])).tolist() == [2, -1, 4]
    assert table.rows(np.array([42, 7])).tolist() == [3, 4]
    empty_vectors, empty_found = table.lookup([])
    assert empty_vectors.shape == (0, 5) and empty_found.shape == (0,)


def test_table_checks_its_shape_and_unique_ids() -> None:
    table = VectorTable(ids=["a", "b"], vectors=np.ones((2, 3), dtype=np.float64))
    assert table.vectors.dtype == np.float32 and table.dim == 3 and len(table) == 2
    with pytest.raises(DuplicateIdError, match=r"'b' at rows 1 and 3"):
        VectorTable(ids=["a", "b", "c", "b", "a"], vectors=np.ones((5, 1)))
    with pytest.raises(ValueError, match="2 ids but 3 vectors"):
        VectorTable(ids=["a", "b"], vectors=np.ones((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        VectorTable(ids=["a"], vectors=np.ones(2))


# --- JSON lines -------------------------------------------------------------------------------


def test_a_jsonl_file_is_read_with_string_and_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "p463", "vector": [0.5, -1.25, 3]}\n'
        "\n"  # a blank line is allowed
        '{"id": "ünï", "vector": [1e-3, 2, 0], "title": "other keys are ignored"}\n',
        encoding="utf-8",
    )
    read = read_vectors(path)
    assert read.ids == ["p463", "ünï"]
    np.testing.assert_array_equal(read.vectors, np.array([[0.5, -1.25, 3], [1e-3, 2, 0]], dtype=np.float32))

    integers = tmp_path / "ints.ndjson"
    integers.write_text('{"id": 7, "vector": [1, 2]}\n{"id": 12, "vector": [3, 4]}\n')
    assert read_vectors(integers).ids == ["7", "12"]

    mixed = tmp_path / "mixed.jsonl"  # Arrow cannot type a column of both: parsed line by line
    mixed.write_text('{"id": 7, "vector": [1, 2]}\n{"id": "p9", "vector": [3, 4]}\n')
    read = read_vectors(mixed)
    assert read.ids == ["7", "p9"] and read.vectors.tolist() == [[1, 2], [3, 4]]


def test_jsonl_round_trips_finite_values_exactly(tmp_path: Path, table: VectorTable) -> None:
    finite = VectorTable(ids=table.ids, vectors=np.nan_to_num(table.vectors, nan=0.5, neginf=-2.0))
    assert_same(read_vectors(write_vectors(tmp_path / "v.jsonl", finite)), finite)
    with pytest.raises(ValueError, match="not finite"):
        write_vectors(tmp_path / "nan.jsonl", table)


def test_a_jsonl_file_with_another_suffix_is_recognised_by_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "vectors.data"
    path.write_text('{"id": "a", "vector": [1, 2]}\n')
    assert infer_format(path) is VectorFormat.JSONL
    assert read_vectors(path).ids == ["a"]


def test_an_unknown_format_names_the_accepted_ones_and_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "vectors.bin"
    path.write_text("a;1;2;" + "9" * 200 + "\n")
    with pytest.raises(ConfigError) as error:
        read_vectors(path)
    message = str(error.value)
    for accepted in ("npy", "parquet", "word2vec", "jsonl", '{"id": ..., "vector": [...]}'):
        assert accepted in message
    assert "first line is 'a;1;2;999" in message and "9" * 100 not in message  # truncated


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"id": "a", "vector": [1, 2]}\n{"id": "b", "vector": [1, 2]\n', "Missing a comma"),
        ('{"name": "a", "vector": [1, 2]}\n', "expected keys 'id' and 'vector'"),
        ('{"id": "a", "vector": [1, 2]}\n{"id": "b", "vector": [1]}\n', "row 2.*expected 2 values, got 1"),
        ('{"id": "a", "vector": [1, 2]}\n{"id": "a", "vector": [3, 4]}\n', "row 2.*duplicate id 'a'"),
        ('{"id": "a", "vector": [1, 2]}\n{"vector": [3, 4]}\n', "row 2.*null id"),
    ],
)
def test_bad_jsonl_files_name_the_file_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=problem) as error:
        read_vectors(path)
    assert error.value.path == str(path)
