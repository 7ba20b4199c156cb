"""Stable 64-bit hashes of Arrow arrays, vectorised (no Python loop per value).

Python's ``hash`` is salted per process, so it cannot key a saved vocabulary. These hashes
are the same on every machine and run, which lets vocabularies be looked up with
``np.searchsorted`` on hashed keys and lets hashing features bucket ids reproducibly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PRIME = np.uint64(0x100000001B3)
_LENGTH_SALT = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective mix of uint64 values."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


_DICTIONARY_MIN_LENGTH = 4096


def hash_strings(array: pa.Array) -> np.ndarray:
    """Polynomial hash of each UTF-8 string, mixed; nulls hash like the empty string.

    Long arrays are dictionary-encoded first (Arrow's C++ hash pass) so each distinct string is
    hashed once: behaviour sequences repeat a few genre names millions of times.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) >= _DICTIONARY_MIN_LENGTH:
        encoded = pc.dictionary_encode(array)
        if len(encoded.dictionary) * 4 < len(array):
            distinct = _hash_distinct_strings(encoded.dictionary)  # (U,)
            indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            empty = _hash_distinct_strings(pa.array([""], pa.string()))[0]
            return np.where(indices >= 0, distinct[np.maximum(indices, 0)], empty)
    return _hash_distinct_strings(array)


def _hash_distinct_strings(array: pa.Array) -> np.ndarray:
    """The hash of :func:`hash_strings`, computed for every element.

    Computed from the Arrow buffers: every byte is multiplied by ``P ** (distance to the end
    of its string)`` and the products are summed per string with a cumulative sum
    (uint64 arithmetic wraps, which is the modulus).
    """
    array = array.cast(pa.large_string()) if not pa.types.is_large_string(array.type) else array
    array = pc.fill_null(array, "")
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
    data_buffer = array.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buffer, dtype=np.uint8)[start:end] if data_buffer is not None else np.zeros(0, np.uint8)
    offsets = offsets - start
    lengths = np.diff(offsets)
    if data.size:
        max_len = int(lengths.max())
        powers = np.empty(max_len, dtype=np.uint64)
        powers[0] = 1
        with np.errstate(over="ignore"):
            powers[1:] = _PRIME
            powers = np.cumprod(powers, dtype=np.uint64)
        string_end = np.repeat(offsets[1:], lengths)
        distance = string_end - 1 - np.arange(data.size)
        with np.errstate(over="ignore"):
            terms = data.astype(np.uint64) * powers[distance]
            cumulative = np.concatenate([[np.uint64(0)], np.cumsum(terms, dtype=np.uint64)])
            sums = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
    else:
        sums = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64(sums + lengths.astype(np.uint64) * _LENGTH_SALT)


def hash_integers(values: np.ndarray) -> np.ndarray:
    return splitmix64(values.astype(np.int64).view(np.uint64))


def hash_array(array: pa.Array) -> np.ndarray:
    """Hash of an Arrow array of strings or integers (nulls hash like the empty string / 0)."""
    if pa.types.is_integer(array.type):
        return hash_integers(pc.fill_null(array, 0).to_numpy(zero_copy_only=False))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return hash_strings(array)
    return hash_strings(pc.cast(array, pa.string()))
