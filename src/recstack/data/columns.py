"""Column parsing shared by the preprocessor: lists, delimited strings, id:weight pairs, numbers.

Multi-valued columns become *flat values + lengths* (one entry per row), the jagged layout::

    #  row        0          1     2
    #  raw        "7,3,9"    ""    "4"
    #  values     [7, 3, 9, 4];  lengths = [3, 0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.errors import DataError
from recstack.schema.enums import Truncation

_FLOAT_PATTERN = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|nan|NaN|inf|-inf|Infinity)\s*$"


@dataclass(frozen=True)
class Where:
    """Where a column came from, for error messages."""

    path: str
    first_row: int  # 1-based data row number of the chunk's first row
    column: str
    feature: str
    # (B,) offset in the chunk as read of each row left after rows were dropped; None: none were
    rows: np.ndarray | None = field(default=None, compare=False)

    def error(self, problem: str, row_in_chunk: int | None = None) -> DataError:
        row = None if row_in_chunk is None else self.first_row + int(self.offset(row_in_chunk))
        return DataError(problem, path=self.path, row=row, column=self.column, feature=self.feature)

    def offset(self, row_in_chunk: int) -> int:
        return int(row_in_chunk) if self.rows is None else int(self.rows[int(row_in_chunk)])


@dataclass(frozen=True)
class Jagged:
    values: pa.Array  # flat values of every row, in order
    lengths: np.ndarray  # (B,) int64


def to_float(array: pa.Array, where: Where) -> np.ndarray:
    """Float64 NumPy values; nulls (and empty strings) become NaN; non-numbers raise DataError."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        try:  # fast path: every value parses
            array = pc.cast(array, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = bad_number_rows(array)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise where.error(f"expected a number, got {array[row].as_py()!r}", row) from None
            stripped = pc.utf8_trim_whitespace(array)
            array = pc.cast(pc.if_else(pc.equal(stripped, ""), pa.scalar(None, pa.string()), stripped), pa.float64())
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        # One conversion: Arrow turns nulls of integer and float arrays into NaN itself.
        values = array.to_numpy(zero_copy_only=False)
        return values if values.dtype == np.float64 else values.astype(np.float64)
    elif pa.types.is_boolean(array.type):
        array = pc.cast(array, pa.float64())
    elif pa.types.is_null(array.type):
        return np.full(len(array), np.nan)
    else:
        raise where.error(f"expected a numeric column, got Arrow type {array.type}")
    return pc.fill_null(array, float("nan")).to_numpy(zero_copy_only=False)


def invalid_numbers(array: pa.Array, values: np.ndarray) -> np.ndarray | None:
    """``(B,)`` bool, True where a value is present (not null, not empty) but NaN or +-inf; None
    when there is none (the common case costs one ``isfinite`` pass).

    ``values`` is ``to_float(array)``: a missing value is NaN there too, so the array tells them apart.
    """
    nonfinite = ~np.isfinite(values)
    if not nonfinite.any():
        return None
    present = array.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        blank = pc.equal(pc.utf8_trim_whitespace(array), "")
        present &= ~pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
    invalid = nonfinite & present
    return invalid if invalid.any() else None


def number_kind(value: float) -> str:
    """How an invalid number reads in an error: ``NaN``, ``inf`` or ``-inf``."""
    return "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def bad_number_rows(array: pa.Array) -> np.ndarray:
    """Boolean mask of rows holding a non-empty string that is not a number."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return np.zeros(len(array), dtype=bool)
    stripped = pc.utf8_trim_whitespace(array)
    valid = pc.or_(pc.match_substring_regex(stripped, _FLOAT_PATTERN), pc.equal(stripped, ""))
    return ~pc.fill_null(valid, True).to_numpy(zero_copy_only=False)


def split_values(array: pa.Array, delimiter: str, where: Where) -> Jagged:
    """Flat values of a list column or a delimited string column; empty tokens are dropped."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = pc.split_pattern(pc.fill_null(array, ""), delimiter)
    elif not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type)):
        raise where.error(f"expected a list or a {delimiter!r}-delimited string, got Arrow type {array.type}")
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(array)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = pc.utf8_trim_whitespace(values)
        keep = pc.not_equal(values, "")
        if not pc.all(keep).as_py():
            keep_np = keep.to_numpy(zero_copy_only=False)
            rows = np.repeat(np.arange(len(lengths)), lengths)
            lengths = np.bincount(rows[keep_np], minlength=len(lengths)).astype(np.int64)
            values = values.filter(keep)
    elif values.null_count:
        keep = pc.is_valid(values)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        lengths = np.bincount(rows[keep.to_numpy(zero_copy_only=False)], minlength=len(lengths)).astype(np.int64)
        values = values.filter(keep)
    return Jagged(values=values, lengths=lengths)


def split_pairs(jagged: Jagged, separator: str, where: Where) -> tuple[Jagged, np.ndarray]:
    """Splits ``id:weight`` tokens into ids and float32 weights; malformed pairs raise DataError."""
    tokens = jagged.values
    if not (pa.types.is_string(tokens.type) or pa.types.is_large_string(tokens.type)):
        raise where.error(f"expected 'id{separator}weight' strings, got Arrow type {tokens.type}")
    parts = pc.split_pattern(tokens, separator, max_splits=1)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(jagged.lengths)), jagged.lengths)
    malformed = counts != 2
    if malformed.any():
        first = int(np.flatnonzero(malformed)[0])
        raise where.error(f"expected 'id{separator}weight' pairs, got {tokens[first].as_py()!r}", rows[first])
    ids = pc.list_element(parts, 0)
    weight_text = pc.list_element(parts, 1)
    weight_text = pc.utf8_trim_whitespace(weight_text)
    bad = bad_number_rows(weight_text) | pc.equal(weight_text, "").to_numpy(zero_copy_only=False)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise where.error(f"expected a numeric weight in pair {tokens[first].as_py()!r}", rows[first])
    weights = pc.cast(weight_text, pa.float32()).to_numpy(zero_copy_only=False)
    return Jagged(values=ids, lengths=jagged.lengths), weights


def pad_recent(
    flat: np.ndarray,
    lengths: np.ndarray,
    maxlen: int,
    fill: float | int = 0,
    *,
    truncate: Truncation = Truncation.RECENT,
) -> np.ndarray:
    """``(B, maxlen)`` left-aligned rows, in list order; a row longer than ``maxlen`` keeps its last
    ``maxlen`` values (``Truncation.RECENT``) or its first ones (``Truncation.FIRST``).

    Example::

        pad_recent(np.array([1, 2, 3, 4]), np.array([3, 1]), 2)  # [[2, 3], [4, 0]]
        pad_recent(np.array([1, 2, 3, 4]), np.array([3, 1]), 2, truncate=Truncation.FIRST)  # [[1, 2], [4, 0]]
    """
    batch = lengths.shape[0]
    if flat.size == 0:
        return np.full((batch, maxlen), fill, dtype=flat.dtype)
    if flat.size == batch * maxlen and (lengths == maxlen).all():
        return flat.reshape(batch, maxlen).copy()
    kept = np.minimum(lengths, maxlen)  # (B,)
    ends = np.cumsum(lengths)  # (B,) flat index one past each row's last value
    # (B,) flat index of each row's first kept value
    first = ends - kept if truncate is Truncation.RECENT else ends - lengths
    slots = np.arange(maxlen)
    # Gather by output slot (B, maxlen) rather than scatter by value: no per-value index arrays.
    source = first[:, None] + slots  # (B, maxlen)
    np.minimum(source, flat.size - 1, out=source)
    out = flat.take(source)
    np.copyto(out, fill, where=slots >= kept[:, None], casting="unsafe")
    return out


def stack_vectors(array: pa.Array, dim: int, delimiter: str, where: Where) -> np.ndarray:
    """``(B, dim)`` float32 from a list<float> column or a delimited string column."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        jagged = split_values(array, delimiter, where)
        bad = bad_number_rows(jagged.values)
        if bad.any():
            rows = np.repeat(np.arange(len(jagged.lengths)), jagged.lengths)
            first = int(np.flatnonzero(bad)[0])
            raise where.error(f"expected numbers in the vector, got {jagged.values[first].as_py()!r}", rows[first])
        values, lengths = pc.cast(jagged.values, pa.float32()), jagged.lengths
    else:
        jagged = split_values(array, delimiter, where)
        values, lengths = pc.cast(jagged.values, pa.float32()), jagged.lengths
    wrong = lengths != dim
    if wrong.any():
        first = int(np.flatnonzero(wrong)[0])
        raise where.error(f"expected a vector of {dim} values, got {int(lengths[first])}", first)
    return values.to_numpy(zero_copy_only=False).reshape(len(lengths), dim)
