"""The JSON-lines vector format, read and written with Arrow (no Python loop per value).

::

    {"id": "p463", "vector": [0.1, -0.2, 0.3]}     <- one object per line; other keys ignored
    {"id": 7, "vector": [0.0, 0.7, -0.1]}          <- ids are strings or integers ("7" here)

Reading hands the file to ``pyarrow.json`` (block by block, on Arrow's threads). Only a file
whose ids mix strings and integers, which Arrow cannot type, is parsed line by line.
Writing formats the values with Arrow's shortest round-trip float text; ids are JSON strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from recstack.errors import DataError
from recstack.vector_io.table import VectorTable, from_arrow

_SCHEMA = pa.schema([("vector", pa.list_(pa.float64()))])
_LINES_PER_WRITE = 100_000


def first_line(path: Path, limit: int = 80) -> str:
    """The file's first non-blank line, truncated to ``limit`` characters, for error messages."""
    with open(path, "rb") as raw:
        for line in raw:
            if line.strip():
                text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
                return text if len(text) <= limit else text[:limit] + "..."
    return ""


def read(path: Path) -> VectorTable:
    """A JSON-lines vector file (see the module docstring)."""
    options = pajson.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="infer")
    try:
        table = pajson.read_json(path, parse_options=options)
    except pa.ArrowInvalid as error:
        if "Column(/id) changed from" in str(error):
            table = _read_mixed_ids(path)
        else:
            message = str(error).replace("JSON parse error: ", "")
            raise DataError(
                f"not JSON lines of {{\"id\": ..., \"vector\": [...]}}: {message} (row numbers count non-blank "
                f"lines from 0); the first line is {first_line(path)!r}",
                path=str(path),
            ) from None
    missing = [name for name in ("id", "vector") if name not in table.column_names]
    if missing:
        raise DataError(
            f"expected keys 'id' and 'vector' on every line, found {table.column_names}; "
            f"the first line is {first_line(path)!r}",
            path=str(path),
            column=missing[0],
        )
    return from_arrow(table.column("id").combine_chunks(), table.column("vector").combine_chunks(), path=str(path))


def _read_mixed_ids(path: Path) -> pa.Table:
    """The slow path for a file whose ids are strings on some lines and integers on others."""
    ids: list[object] = []
    vectors: list[object] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                id_, vector = record["id"], record["vector"]
            except (ValueError, KeyError, TypeError) as error:
                raise DataError(f"line {number}: not an object with 'id' and 'vector': {error}", path=str(path)) from None
            if isinstance(id_, bool) or not isinstance(id_, (str, int)):
                raise DataError(f"line {number}: ids must be strings or integers, got {id_!r}", path=str(path))
            ids.append(str(id_))
            vectors.append(vector)
    try:
        return pa.table({"id": pa.array(ids, pa.string()), "vector": pa.array(vectors, pa.list_(pa.float64()))})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(f"'vector' must be a list of numbers on every line: {error}", path=str(path)) from None


def write(path: Path, table: VectorTable) -> None:
    """``table`` as JSON lines; every value must be finite (JSON has no NaN or infinity)."""
    if not np.isfinite(table.vectors).all():
        row = int(np.flatnonzero(~np.isfinite(table.vectors).all(axis=1))[0])
        raise ValueError(f"{str(path)!r}: vector of id {table.ids[row]!r} (row {row}) is not finite; JSON cannot hold it")
    values = pc.cast(pa.array(table.vectors.reshape(-1)), pa.string())  # (N * D,) shortest round-trip text
    offsets = pa.array(np.arange(0, len(table) * table.dim + 1, table.dim, dtype=np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, values), ", ")  # (N,) "v1, ..., vD"
    ids = pa.array([json.dumps(id_, ensure_ascii=False) for id_ in table.ids], pa.string())
    lines = pc.binary_join_element_wise('{"id": ', ids, ', "vector": [', joined, "]}\n", "")
    with open(path, "wb") as out:
        for start in range(0, len(lines), _LINES_PER_WRITE):
            piece = lines.slice(start, _LINES_PER_WRITE)
            whole = pa.ListArray.from_arrays(pa.array([0, len(piece)], pa.int32()), piece)
            out.write(pc.binary_join(whole, "")[0].as_py().encode("utf-8"))
