"""Vocabularies (fitted or pretrained) and hashing, mapping raw values to embedding rows.

Row layout of every table: 0 = padding, 1 = out-of-vocabulary (and missing), 2.. = values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.batch import OOV_INDEX, PADDING_INDEX
from recstack.data.hashing import hash_array, hash_integers, hash_strings

FIRST_VALUE_INDEX = 2
# Integer keys spanning at most this many slots are looked up by direct addressing.
_DENSE_LOOKUP_LIMIT = 1 << 24
# Up to this many string values (a served request's row), a dict lookup is several times
# faster than hashing through Arrow kernels, whose fixed cost per call dominates tiny arrays.
_SMALL_LOOKUP = 64


class VocabularyCounter:
    """Counts values over a stream of Arrow arrays in bounded memory per distinct value."""

    def __init__(self) -> None:
        self._values: list[pa.Array] = []
        self._counts: list[pa.Array] = []
        self._pending = 0
        self._compacted_size = 0
        self.is_integer: bool | None = None

    def update(self, values: pa.Array) -> None:
        values = empty_to_null(values).drop_null()
        if len(values) == 0:
            return
        integer = pa.types.is_integer(values.type)
        if self.is_integer is None:
            self.is_integer = integer
        if self.is_integer and not integer:
            self._to_strings()
        if not self.is_integer:
            values = values.cast(pa.string()) if not pa.types.is_string(values.type) else values
        else:
            values = values.cast(pa.int64())
        counted = pc.value_counts(values)
        self._values.append(counted.field("values"))
        self._counts.append(counted.field("counts"))
        self._pending += len(counted)
        if self._pending > 4 * max(self._compacted_size, 1 << 16):
            self._compact()

    def _to_strings(self) -> None:
        self.is_integer = False
        self._values = [v.cast(pa.string()) for v in self._values]

    def _compact(self) -> None:
        if not self._values:
            return
        table = pa.table({"value": pa.concat_arrays(self._values), "count": pa.concat_arrays(self._counts)})
        grouped = table.group_by("value").aggregate([("count", "sum")])
        self._values = [grouped.column("value").combine_chunks()]
        self._counts = [grouped.column("count_sum").combine_chunks()]
        self._compacted_size = self._pending = len(grouped)

    def most_common(self, *, min_count: int, max_size: int | None) -> list[Any]:
        """Values with at least ``min_count`` occurrences, most frequent first, ties by value."""
        self._compact()
        if not self._values:
            return []
        values, counts = self._values[0], self._counts[0].to_numpy()
        keep = counts >= min_count
        values = values.filter(pa.array(keep))
        counts = counts[keep]
        order = pc.sort_indices(
            pa.table({"c": -counts, "v": values}), sort_keys=[("c", "ascending"), ("v", "ascending")]
        )
        ordered = values.take(order).to_pylist()
        return ordered[:max_size] if max_size is not None else ordered


@dataclass
class Vocabulary:
    """Maps raw values to rows ``2..``; unknown values to ``unknown_index``.

    Args:
        keys: known values in row order (row ``2 + i`` is ``keys[i]``), ints or strings.
        unknown_index: row for values not in ``keys``: OOV (1), or padding (0) for pretrained
            tables so that pooling ignores ids without a vector.
    """

    keys: list[Any]
    unknown_index: int = OOV_INDEX
    _lookup: Any = field(default=None, init=False, repr=False)
    _string_table: Any = field(default=None, init=False, repr=False)
    _string_rows: Any = field(default=None, init=False, repr=False)

    @property
    def is_integer(self) -> bool:
        return bool(self.keys) and isinstance(self.keys[0], (int, np.integer))

    @property
    def num_rows(self) -> int:
        return FIRST_VALUE_INDEX + len(self.keys)

    def lookup(self, values: pa.Array) -> np.ndarray:
        """Rows for an Arrow array of raw values, ``int64``; nulls map to OOV."""
        if self._lookup is None:
            self._lookup = self._build_lookup()
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        values = empty_to_null(values)
        if not self.is_integer and pa.types.is_integer(values.type):
            values = values.cast(pa.string())  # string keys (a CSV fit, a delimited sequence) match 42 as "42"
        kind, table = self._lookup
        is_text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
        if is_text and len(values) <= _SMALL_LOOKUP and (kind == "dense" or not self.is_integer):
            rows = self._small_string_rows(values)  # the same rows as the hashed paths below
        elif kind == "dense" and pa.types.is_integer(values.type):
            rows = self._dense_rows(values, table)
        elif kind == "dense":
            rows = self._hashed_rows(hash_strings(values.cast(pa.string())), self._string_lookup())
        elif self.is_integer:
            hashes = hash_array(values if pa.types.is_integer(values.type) else self._as_int(values))
            rows = self._hashed_rows(hashes, table)
        else:  # string keys: integer input is matched by its decimal text
            rows = self._hashed_rows(hash_strings(values.cast(pa.string())), table)
        if values.null_count:
            rows[np.asarray(values.is_null())] = OOV_INDEX if self.unknown_index else PADDING_INDEX
        return rows

    def _small_string_rows(self, values: pa.Array) -> np.ndarray:
        if self._string_rows is None:
            rows: dict[str, int] = {}
            for row, key in enumerate(self.keys, FIRST_VALUE_INDEX):
                rows.setdefault(str(key), row)  # the first of equal texts, as the hashed table finds
            self._string_rows = rows
        get, unknown = self._string_rows.get, self.unknown_index
        return np.fromiter((get(v, unknown) for v in values.to_pylist()), dtype=np.int64, count=len(values))

    def _as_int(self, values: pa.Array) -> pa.Array:
        try:
            return values.cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return values

    def _dense_rows(self, values: pa.Array, table: tuple[int, np.ndarray]) -> np.ndarray:
        low, direct = table
        if values.null_count:
            values = pc.fill_null(values, low - 1)  # below the range: unknown (lookup sets OOV)
        raw = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        # direct is framed by an unknown slot at each end; "clip" sends every value outside
        # [low, high] to one of them: one subtraction and one gather, no masks.
        return np.take(direct, raw - (low - 1), mode="clip")

    def _hashed_rows(self, hashes: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        sorted_hashes, rows_of_sorted = table
        if sorted_hashes.size == 0:
            return np.full(hashes.shape, self.unknown_index, dtype=np.int64)
        position = np.searchsorted(sorted_hashes, hashes)
        position[position == sorted_hashes.size] = 0
        found = sorted_hashes[position] == hashes
        return np.where(found, rows_of_sorted[position], self.unknown_index)

    def _build_lookup(self) -> tuple[str, Any]:
        rows = np.arange(FIRST_VALUE_INDEX, self.num_rows, dtype=np.int64)
        if self.is_integer:
            keys = np.asarray(self.keys, dtype=np.int64)
            low, high = int(keys.min()), int(keys.max())
            if high - low < _DENSE_LOOKUP_LIMIT:
                direct = np.full(high - low + 3, self.unknown_index, dtype=np.int64)
                direct[keys - low + 1] = rows
                return "dense", (low, direct)
            hashes = hash_integers(keys)
            order = np.argsort(hashes, kind="stable")
            return "hashed", (hashes[order], rows[order])
        return "hashed", self._string_lookup()

    def _string_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        if self._string_table is None:
            self._string_table = self._hashed_strings_table()
        return self._string_table

    def _hashed_strings_table(self) -> tuple[np.ndarray, np.ndarray]:
        hashes = hash_strings(pa.array([str(k) for k in self.keys], type=pa.string()))
        order = np.argsort(hashes, kind="stable")
        return hashes[order], np.arange(FIRST_VALUE_INDEX, self.num_rows, dtype=np.int64)[order]

    def grown(self, candidates: Sequence[Any], *, max_size: int | None = None) -> "Vocabulary":
        """This vocabulary with the ``candidates`` it lacks appended, in their order: every
        known value keeps its row (incremental training), new values get rows ``num_rows..``.

        Args:
            candidates: values in priority order (most frequent first), ints or strings; a
                value already known (``42`` and ``"42"`` are one value) is skipped.
            max_size: cap on the grown vocabulary's size; known values are never dropped, so
                a vocabulary already this large gains nothing.

        Example:
            >>> Vocabulary(keys=[7, 3]).grown([3, 9, 5], max_size=3).keys
            [7, 3, 9]
        """
        room = None if max_size is None else max(0, max_size - len(self.keys))
        if len(candidates) == 0 or room == 0:
            return Vocabulary(keys=list(self.keys), unknown_index=self.unknown_index)
        offered = pa.array(list(candidates))
        integer = (self.is_integer or not self.keys) and pa.types.is_integer(offered.type)
        known = pa.array(self.keys, type=pa.int64() if integer else None)
        if integer:
            keys, offered = list(self.keys), offered.cast(pa.int64())
        else:  # one key type per vocabulary: ints become their decimal text, as lookups match them
            known, offered = known.cast(pa.string()), offered.cast(pa.string())
            keys = known.to_pylist()
        fresh = pc.unique(offered.filter(pc.invert(pc.is_in(offered, value_set=known)))).to_pylist()
        return Vocabulary(keys=keys + (fresh if room is None else fresh[:room]), unknown_index=self.unknown_index)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "unknown_index": self.unknown_index}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vocabulary":
        return cls(keys=list(data["keys"]), unknown_index=int(data["unknown_index"]))


@dataclass(frozen=True)
class HashBuckets:
    """Hashing trick: ``row = 2 + hash(value) % buckets``; no vocabulary to fit or store."""

    buckets: int

    @property
    def num_rows(self) -> int:
        return FIRST_VALUE_INDEX + self.buckets

    def lookup(self, values: pa.Array) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        values = empty_to_null(values)
        # Integers hash as their decimal strings so "42" and 42 share a bucket across file formats.
        if pa.types.is_integer(values.type):
            values = values.cast(pa.string())
        rows = (hash_array(values) % np.uint64(self.buckets)).astype(np.int64) + FIRST_VALUE_INDEX
        if values.null_count:
            rows[np.asarray(values.is_null())] = OOV_INDEX
        return rows


def empty_to_null(values: pa.Array) -> pa.Array:
    """Empty strings (a CSV's empty cell) as nulls: missing values take the OOV row, never a row of their own."""
    if (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) and len(values):
        empty = pc.equal(values, "")
        if pc.any(empty).as_py():
            return pc.if_else(empty, pa.scalar(None, values.type), values)
    return values


def vocabulary_from_ids(ids: Sequence[str]) -> Vocabulary:
    """A pretrained table's vocabulary: the vector file's ids; unknown ids get the zero padding row."""
    return Vocabulary(keys=[str(i) for i in ids], unknown_index=PADDING_INDEX)
