"""The word2vec text format, parsed and written with Arrow (no Python loop per value).

::

    3 4                          <- optional header: N vectors, D values each
    apple 0.1 -0.2 0.3 0.05      <- id, then D values, single spaces
    pear 0.0 0.7 -0.1 0.2
    plum 0.4 0.4 0.0 -0.3

Reading hands the whole file to ``pyarrow.csv`` (space delimiter, no quoting, one string
column and D float32 columns). Only when Arrow rejects the file does a slow line-by-line
scan run, to name the line and the problem.

A first line of exactly two integers is taken as the header, except when the next line has
two fields (an id and one value) and the first line's N is not the number of lines that
follow: then the file is a headerless one of 1-dim vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from recstack.errors import DataError
from recstack.vector_io.table import DuplicateIdError, VectorTable

_INTEGER = re.compile(r"^[0-9]+$")
_VALUES_PER_CHUNK = 4_000_000  # rows are formatted a chunk at a time: ~50 MB of text


@dataclass(frozen=True)
class _Layout:
    header: tuple[int, int] | None  # (N, D) from the header line
    dim: int  # D
    trailing_space: bool  # lines end with " " (fastText .vec files do)


def read(path: Path) -> VectorTable:
    layout = _layout(path)
    names = ["id"] + [f"v{j}" for j in range(layout.dim)] + (["trailing"] if layout.trailing_space else [])
    types = {name: pa.float32() for name in names[1 : layout.dim + 1]} | {"id": pa.string(), "trailing": pa.string()}
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if layout.header else 0),
            parse_options=pcsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False),
            convert_options=pcsv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False),
        )
        if layout.trailing_space and not pc.all(pc.equal(table.column("trailing"), "")).as_py():
            raise pa.ArrowInvalid("a value after the expected D values")
        if pc.any(pc.equal(table.column("id"), "")).as_py():
            raise pa.ArrowInvalid("an empty id")
    except pa.ArrowInvalid as error:
        raise _explain(path, layout, error) from None
    if table.num_rows == 0:
        raise DataError("empty file: no vectors", path=str(path))
    if layout.header is not None and layout.header[0] != table.num_rows:
        raise DataError(f"line 1: header says {layout.header[0]} vectors, found {table.num_rows}", path=str(path))
    vectors = np.empty((table.num_rows, layout.dim), dtype=np.float32)  # (N, D)
    for j in range(layout.dim):
        vectors[:, j] = table.column(j + 1).to_numpy()
    try:
        return VectorTable(ids=table.column("id"), vectors=vectors)
    except DuplicateIdError as error:
        lines = _lines_of_id(path, error.id, layout)
        problem = f"line {lines[1]}: duplicate id {error.id!r} (first on line {lines[0]})"
        raise DataError(problem, path=str(path)) from None


def check_ids(table: VectorTable, path: Path) -> None:
    """Raise ValueError naming ``path`` if an id is empty or holds whitespace (it would split)."""
    ids = pa.array(table.ids, type=pa.string())
    bad = pc.or_(pc.match_substring_regex(ids, r"\s"), pc.equal(ids, ""))
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(np.asarray(bad))[0])
        problem = f"word2vec ids cannot be empty or hold whitespace: {table.ids[row]!r} (row {row})"
        raise ValueError(f"{str(path)!r}: {problem}")


def write(path: Path, table: VectorTable) -> None:
    """``"N D"``, then one ``"id v1 ... vD"`` line per vector (floats in shortest round-trip form)."""
    ids = pa.array(table.ids, type=pa.string())
    rows_per_chunk = max(1, _VALUES_PER_CHUNK // table.dim)
    with open(path, "wb") as out:
        out.write(f"{len(table)} {table.dim}\n".encode())
        for start in range(0, len(table), rows_per_chunk):
            stop = start + rows_per_chunk
            values = [pc.cast(pa.array(table.vectors[start:stop, j]), pa.string()) for j in range(table.dim)]
            lines = pc.binary_join_element_wise(ids[start:stop], *values, " ")
            lines = pc.binary_join_element_wise(lines, "", "\n").cast(pa.large_string())  # "id v1 .. vD\n"
            offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[: len(lines) + 1]
            out.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _layout(path: Path) -> _Layout:
    first, second = _first_lines(path, 2)
    if first is None:
        raise DataError("empty file: no vectors", path=str(path))
    fields = first[1].split(" ")
    header = None
    if len(fields) == 2 and all(_INTEGER.match(f) for f in fields):
        n, d = int(fields[0]), int(fields[1])
        next_fields = second[1].rstrip(" ").split(" ") if second else None
        if next_fields is None or len(next_fields) != 2:
            header = (n, d)
        elif d == 1 and n == _count_nonempty_lines(path) - 1:  # "N 1" or id + one value: count
            header = (n, d)
    data = second if header else first
    if data is None:
        raise DataError("empty file: no vectors", path=str(path))
    dim = header[1] if header else len(data[1].rstrip(" ").split(" ")) - 1
    if dim < 1:
        raise DataError(f"line {data[0]}: expected an id and at least one value", path=str(path))
    return _Layout(header=header, dim=dim, trailing_space=data[1].endswith(" "))


def _first_lines(path: Path, count: int) -> list[tuple[int, str] | None]:
    """The first ``count`` non-empty lines as ``(line number, text)``, None past the end."""
    found: list[tuple[int, str] | None] = []
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            text = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")
            if text:
                found.append((number, text))
                if len(found) == count:
                    break
    return found + [None] * (count - len(found))


def _count_nonempty_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(1 for raw in lines if raw.strip(b"\r\n"))


def _explain(path: Path, layout: _Layout, error: Exception) -> DataError:
    """Scan the file line by line (error path only) for the first line Arrow could not take."""
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if number == 1 and layout.header:
                continue
            problem = _line_problem(raw.rstrip(b"\n").rstrip(b"\r"), layout)
            if problem:
                return DataError(f"line {number}: {problem}", path=str(path))
    return DataError(f"cannot parse as word2vec text: {error}", path=str(path))


def _line_problem(raw: bytes, layout: _Layout) -> str | None:
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    fields = text.split(" ")
    if fields[0] == "":
        return "empty id (the line starts with a space)"
    values = fields[1:-1] if layout.trailing_space and fields[-1] == "" else fields[1:]
    if "" in values[:-1] or (values and values[-1] == "" and not layout.trailing_space):
        return "an empty value: separate fields by single spaces"
    if len(values) != layout.dim:
        return f"expected {layout.dim} values after the id, got {len(values)}"
    if layout.trailing_space != text.endswith(" "):
        return "trailing space differs from the first line of vectors"
    for position, value in enumerate(values, start=1):
        try:
            float(value)
        except ValueError:
            return f"non-numeric value {value!r} (value {position} of id {fields[0]!r})"
    return None


def _lines_of_id(path: Path, id_: str, layout: _Layout) -> list[int]:
    found = []
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if (number > 1 or not layout.header) and raw.split(b" ", 1)[0].decode("utf-8", "replace") == id_:
                found.append(number)
    return found
