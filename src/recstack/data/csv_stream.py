"""The pieces of CSV reading that sit around Arrow's streaming reader.

- :class:`CsvStream` opens ``pyarrow.csv.open_csv`` and closes it deterministically. Arrow reads
  ahead on its IO threads, and the reader is freed by whichever thread finishes last; a Python
  ``invalid_row_handler`` inside it then needs the GIL on that thread. If that happens while the
  interpreter is finalising, the thread is torn down mid C++ frame and the process aborts
  ("terminate called without an active exception", exit 134) after an otherwise clean error.
  So a stream passes a Python handler only when it needs one (skipping or diagnosing rows),
  waits on close until Arrow has released it, and an ``atexit`` hook closes any stream an
  exception (or a global) left open.
- :func:`read_header` reads the header line without starting a reader.
- :func:`guess_delimiter` says which of ``, ; \\t |`` a file looks separated by.
- :func:`decode_utf8` turns binary columns into text, masking rows that are not UTF-8.
"""

from __future__ import annotations

import atexit
import csv
import gc
import re
import time
import weakref
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recstack.errors import DataError

__all__ = ["CsvStream", "decode_utf8", "guess_delimiter", "read_header"]

DELIMITERS = (",", ";", "\t", "|")
_RELEASE_SECONDS = 5.0


class _RowHandler:
    """A Python ``invalid_row_handler`` whose release by Arrow can be awaited (weakref-able)."""

    def __init__(self, decide: Callable[[Any], str]) -> None:
        self.decide = decide

    def __call__(self, row: Any) -> str:
        return self.decide(row)


_LIVE_STREAMS: "weakref.WeakSet[CsvStream]" = weakref.WeakSet()  # streams holding a Python handler


def _wait_released(handlers: Callable[[], bool], seconds: float) -> None:
    """Sleep (releasing the GIL, so Arrow's threads can drop their references) until
    ``handlers()`` is False or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while handlers() and time.monotonic() < deadline:
        time.sleep(0.001)


@atexit.register
def _close_all() -> None:
    """Close streams still open at exit (left in a traceback, a global, a suspended generator)
    while Arrow's threads can still take the GIL to release their handlers."""
    if len(_LIVE_STREAMS):
        gc.collect()
        for stream in list(_LIVE_STREAMS):
            stream.close()


class CsvStream:
    """Record batches of one CSV file; use as a context manager (or call :meth:`close`).

    Args:
        path: the file.
        read_options, convert_options: Arrow's options.
        delimiter: the field delimiter.
        on_invalid_row: called with Arrow's ``InvalidRow`` for a row with the wrong number of
            fields, returns ``"skip"`` or ``"error"``; None (the fast path) raises on such rows.

    Example::

        with CsvStream(path, read_options=..., convert_options=..., delimiter=",") as stream:
            for records in stream:
                ...
    """

    def __init__(
        self,
        path: str,
        *,
        read_options: pacsv.ReadOptions,
        convert_options: pacsv.ConvertOptions,
        delimiter: str,
        on_invalid_row: Callable[[Any], str] | None = None,
    ) -> None:
        handler = _RowHandler(on_invalid_row) if on_invalid_row is not None else None
        self._handler_ref = weakref.ref(handler) if handler is not None else None
        if handler is not None:
            _LIVE_STREAMS.add(self)
        parse_options = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler)
        self._reader: pacsv.CSVStreamingReader | None = None
        try:
            self._reader = pacsv.open_csv(
                path, read_options=read_options, parse_options=parse_options, convert_options=convert_options
            )
        finally:
            del parse_options, handler
            if self._reader is None:
                self._await_release()

    @property
    def schema(self) -> pa.Schema:
        assert self._reader is not None, "the stream is closed"
        return self._reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            assert self._reader is not None, "the stream is closed"
            try:
                yield self._reader.read_next_batch()
            except StopIteration:
                return

    def close(self) -> None:
        """Stop reading and wait (briefly) until Arrow's threads hold no Python object of ours."""
        _LIVE_STREAMS.discard(self)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
            del reader
        self._await_release()

    def _await_release(self) -> None:
        ref = self._handler_ref
        if ref is not None:
            _wait_released(lambda: ref() is not None, _RELEASE_SECONDS)

    def __enter__(self) -> "CsvStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _text_lines(path: str, limit: int) -> Iterator[str]:
    """The file's first lines (at most ``limit``) as text; a UTF-8 byte-order mark is dropped."""
    with open(path, "rb") as raw:
        for number, line in enumerate(raw, 1):
            if number > limit:
                return
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"line {number} is not valid UTF-8 text: {line[:60]!r}", path=path
                ) from None


def read_header(path: str, delimiter: str, *, header: bool) -> list[str]:
    """Column names of a CSV file from its first row (Arrow's ``f0, f1, ...`` without a header),
    read with the csv module: no Arrow reader (and none of its threads) is started."""
    try:
        first = next(csv.reader(_text_lines(path, 1000), delimiter=delimiter, quotechar='"', doublequote=True), None)
    except csv.Error as error:
        raise DataError(f"could not read the header line: {error}", path=path) from None
    if first is None:
        raise DataError("file is empty", path=path)
    return list(first) if header else [f"f{i}" for i in range(len(first))]


def guess_delimiter(path: str, current: str) -> str | None:
    """The one of ``, ; \\t |`` (other than ``current``) the first lines look separated by.

    Counts each candidate outside double quotes on the first two lines; a candidate found the
    same number of times on both lines wins over one whose count differs (as ``csv.Sniffer``).
    """
    with open(path, "rb") as raw:
        lines = [raw.readline(1 << 16).decode("utf-8", errors="replace") for _ in range(2)]
    lines = [re.sub(r'"[^"]*"', "", line) for line in lines if line.strip()]
    if not lines:
        return None
    counts = {d: [line.count(d) for line in lines] for d in DELIMITERS if d != current}
    present = {d: c for d, c in counts.items() if c[0] > 0}
    consistent = {d: c for d, c in present.items() if len(set(c)) == 1}
    ranked = sorted((consistent or present).items(), key=lambda item: -item[1][0])
    return ranked[0][0] if ranked else None


def delimiter_hint(path: str, current: str) -> str:
    """``looks ';'-separated; set delimiter: ';' (or --delimiter ';')``, or a question."""
    guess = guess_delimiter(path, current)
    if guess is None:
        return f"is the delimiter {current!r} right?"
    return f"the file looks {guess!r}-separated; set delimiter: {guess!r} (or --delimiter {guess!r})"


def decode_utf8(records: pa.RecordBatch, columns: Sequence[str]) -> tuple[pa.RecordBatch, np.ndarray, dict[str, int]]:
    """``records`` with its binary ``columns`` cast to text, the ``(rows,)`` bool mask of rows
    holding bytes that are not UTF-8 (nulled in the result), and each bad column's first bad row.

    Casting validates a whole column at once; only a column that fails is searched value by
    value (the slow path, after a failure).
    """
    bad = np.zeros(records.num_rows, dtype=bool)
    first_bad: dict[str, int] = {}
    arrays = list(records.columns)
    for index, name in enumerate(records.schema.names):
        column = arrays[index]
        if name not in columns or not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            continue
        try:
            arrays[index] = pc.cast(column, pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        column_bad = np.array([_not_utf8(value) for value in column.to_pylist()], dtype=bool)
        first_bad[name] = int(column_bad.argmax())
        bad |= column_bad
        arrays[index] = pc.cast(pc.if_else(pa.array(column_bad), pa.scalar(None, column.type), column), pa.string())
    fields = [pa.field(name, array.type) for name, array in zip(records.schema.names, arrays)]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)), bad, first_bad


def _not_utf8(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
