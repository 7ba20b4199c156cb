"""Read and write pretrained vector files keyed by id: NPY + ids, Parquet, word2vec text, JSON lines.

=============  ===========================================================================
format         layout
=============  ===========================================================================
``npy``        ``vectors.npy`` float32 ``(N, D)`` and ``ids.txt`` (one id per line, row
               order) in a folder; or ``items.npy`` beside ``items.ids.txt`` (the path may
               then also be given as the prefix ``items``)
``parquet``    columns ``id`` (string or integer) and ``vector`` (``list<float32>`` or
               ``fixed_size_list<float32>[D]``)
``word2vec``   text: an optional header line ``"N D"``, then ``"id v1 ... vD"`` per line,
               single-space separated (a trailing space, as fastText writes, is accepted)
``jsonl``      ``{"id": "p463", "vector": [0.1, ...]}`` per line (ids strings or integers;
               other keys ignored)
=============  ===========================================================================

The format follows the suffix (``.npy``; ``.parquet``/``.pq``; ``.txt``/``.vec``/``.w2v``;
``.jsonl``/``.ndjson``/``.json``); a folder holding ``vectors.npy`` or a prefix ``p`` with
``p.npy`` beside it reads as NPY, and a file with another suffix is recognised by its start.
Errors on bad files are :class:`~recstack.errors.DataError` naming the file and the line
(text files) or the 1-based row (Parquet, NPY). Writes go to a temporary file that then
replaces the target (``os.replace``), so a reader never sees half a file.

Example::

    write_vectors("items.parquet", VectorTable(ids=["a", "b"], vectors=vectors))
    table = read_vectors("items.parquet")
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recstack.errors import ConfigError, DataError
from recstack.vector_io import _jsonl, _word2vec_text
from recstack.vector_io.table import DuplicateIdError, VectorTable, from_arrow
from recstack.schema import VectorFormat

PathLike = Union[str, "os.PathLike[str]"]

_SUFFIX_FORMATS = {
    ".npy": VectorFormat.NPY,
    ".parquet": VectorFormat.PARQUET,
    ".pq": VectorFormat.PARQUET,
    ".txt": VectorFormat.WORD2VEC,
    ".vec": VectorFormat.WORD2VEC,
    ".w2v": VectorFormat.WORD2VEC,
    ".jsonl": VectorFormat.JSONL,
    ".ndjson": VectorFormat.JSONL,
    ".json": VectorFormat.JSONL,
}
_ACCEPTED = (
    "npy (a .npy file with ids beside it, or a folder holding vectors.npy and ids.txt), "
    "parquet (columns id, vector), word2vec text ('id v1 ... vD' per line), "
    'jsonl (\'{"id": ..., "vector": [...]}\' per line)'
)


def infer_format(path: PathLike) -> VectorFormat:
    """The vector format of ``path`` from its suffix, or NPY for a folder / ``path.npy`` prefix;
    a file with another suffix is recognised by its first bytes (Parquet, NPY, JSON lines)."""
    p = Path(path)
    if p.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[p.suffix.lower()]
    if p.is_dir() or Path(f"{p}.npy").is_file():
        return VectorFormat.NPY
    looked = ""
    if p.is_file():
        with open(p, "rb") as raw:
            start = raw.read(8)
        if start.startswith(b"PAR1"):
            return VectorFormat.PARQUET
        if start.startswith(b"\x93NUMPY"):
            return VectorFormat.NPY
        line = _jsonl.first_line(p)
        if line.startswith("{"):
            return VectorFormat.JSONL
        looked = f"; its first line is {line!r}"
    known = ", ".join(sorted(_SUFFIX_FORMATS))
    raise ConfigError(
        f"cannot tell the vector format of {str(p)!r}{looked}. Accepted formats: {_ACCEPTED}. "
        f"Use a suffix ({known}) or pass format="
    )


def npy_paths(path: PathLike) -> tuple[Path, Path]:
    """``(vectors .npy file, ids .txt file)`` of an NPY vector file given as file, folder or prefix."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        ids_name = "ids.txt" if p.name == "vectors.npy" else f"{p.name[:-4]}.ids.txt"
        return p, p.with_name(ids_name)
    if not p.is_dir() and Path(f"{p}.npy").is_file():
        return Path(f"{p}.npy"), Path(f"{p}.ids.txt")
    return p / "vectors.npy", p / "ids.txt"


def read_vectors(path: PathLike, format: VectorFormat | str | None = None) -> VectorTable:
    """Read a vector file (see the module docstring for the layouts).

    Args:
        path: the file (or NPY folder / prefix).
        format: a :class:`VectorFormat` or its value; None infers it from ``path``.

    Returns:
        A :class:`VectorTable` with ``N`` string ids and ``(N, D)`` float32 vectors.
    """
    fmt = VectorFormat(format) if format is not None else infer_format(path)
    if fmt is VectorFormat.NPY:
        return _read_npy(*npy_paths(path))
    if fmt is VectorFormat.PARQUET:
        return _read_parquet(_existing_file(Path(path)))
    if fmt is VectorFormat.JSONL:
        return _jsonl.read(_existing_file(Path(path)))
    return _word2vec_text.read(_existing_file(Path(path)))


def write_vectors(path: PathLike, table: VectorTable, format: VectorFormat | str | None = None) -> Path:
    """Write ``table`` atomically; returns the path of the (vectors) file written.

    Args:
        path: target file; for NPY a ``.npy`` file (ids beside it) or a folder (created).
        table: the vectors to write (at least one).
        format: a :class:`VectorFormat` or its value; None infers it from the suffix.
    """
    fmt = VectorFormat(format) if format is not None else infer_format(path)
    if len(table) == 0:
        raise ValueError(f"refusing to write an empty vector table to {str(path)!r}")
    if fmt is VectorFormat.NPY:
        vectors_path, ids_path = npy_paths(path)
        _check_ids_for_lines(table, ids_path)
        with atomic_path(vectors_path) as tmp, open(tmp, "wb") as out:
            np.save(out, table.vectors)
        with atomic_path(ids_path) as tmp:
            tmp.write_text("\n".join(table.ids) + "\n", encoding="utf-8")
        return vectors_path
    target = Path(path)
    if fmt is VectorFormat.PARQUET:
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(table.vectors.reshape(-1)), table.dim)
        arrow_table = pa.table({"id": pa.array(table.ids, type=pa.string()), "vector": vectors})
        with atomic_path(target) as tmp:
            pq.write_table(arrow_table, tmp)
        return target
    if fmt is VectorFormat.JSONL:
        with atomic_path(target) as tmp:
            _jsonl.write(tmp, table)
        return target
    _word2vec_text.check_ids(table, target)
    with atomic_path(target) as tmp:
        _word2vec_text.write(tmp, table)
    return target


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"vector file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise DataError("empty file: no vectors", path=str(path))
    return path


def _check_ids_for_lines(table: VectorTable, ids_path: Path) -> None:
    ids = pa.array(table.ids, type=pa.string())
    bad = pc.or_(pc.match_substring_regex(ids, r"[\r\n]"), pc.equal(ids, ""))
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(np.asarray(bad))[0])
        raise ValueError(f"{str(ids_path)!r}: id {table.ids[row]!r} (row {row}) is empty or holds a line break")


def _read_npy(vectors_path: Path, ids_path: Path) -> VectorTable:
    _existing_file(vectors_path)
    _existing_file(ids_path)
    try:
        vectors = np.load(vectors_path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"not a readable .npy array: {error}", path=str(vectors_path)) from error
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        problem = f"expected a 2-D numeric (N, D) array, got {vectors.dtype} {vectors.shape}"
        raise DataError(problem, path=str(vectors_path))
    text = ids_path.read_text(encoding="utf-8").replace("\r\n", "\n")
    ids = np.array(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"), dtype=str)
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise DataError(f"line {int(empty[0]) + 1}: empty id", path=str(ids_path))
    if ids.shape[0] != vectors.shape[0]:
        raise DataError(
            f"{ids.shape[0]} ids in {str(ids_path)!r} but {vectors.shape[0]} vector rows", path=str(vectors_path)
        )
    try:
        return VectorTable(ids=ids, vectors=vectors)
    except DuplicateIdError as error:
        first, second = (row + 1 for row in error.rows)
        raise DataError(f"line {second}: duplicate id {error.id!r} (first on line {first})", path=str(ids_path)) from None


def _read_parquet(path: Path) -> VectorTable:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"not a readable Parquet file: {error}", path=str(path)) from error
    if "id" not in schema.names or "vector" not in schema.names:
        raise DataError(f"expected columns 'id' and 'vector', found {schema.names}", path=str(path))
    table = pq.read_table(path, columns=["id", "vector"])
    return from_arrow(table.column("id").combine_chunks(), table.column("vector").combine_chunks(), path=str(path))
