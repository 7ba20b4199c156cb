"""The caller's item ids, integer or string, and the int64 keys faiss and the exact index store.

Shape legend: N ids, Q queries, K results per query.

An index is keyed by one id type, fixed by its first ``add`` (or by ``id_type=``):

* ``IdType.INT``: non-negative integers; stored as they are (the key is the id). Results are
  int64, ``-1`` where padded.
* ``IdType.STR``: strings such as ``"p463"``. faiss only stores int64 labels, so ``IdMap``
  gives each string the key ``position in IdMap.strings`` (first-seen order, never reused) and
  maps result keys back. The strings are saved as a plain unicode ``.npy`` (no pickle) beside
  the index. Results are an object array of ``str``, ``None`` where padded.

Vectorised through Arrow (``pc.index_in`` is a hash lookup over the whole array), so adding a
million string ids runs no Python loop per id.

>>> ids = IdMap()
>>> ids.keys_for(np.array(["p7", "p3"], dtype=object), add=True).tolist()
[0, 1]
>>> ids.to_ids(np.array([[1, 0, -1]])).tolist()
[['p3', 'p7', None]]
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAD_ID = -1  # padding in int results
PAD_STR = None  # padding in string results


class IdType(str, Enum):
    INT = "int"
    STR = "str"


def id_type_of(ids: np.ndarray) -> IdType:
    """INT for integer arrays, STR for strings (numpy unicode or an object array of str)."""
    if ids.dtype.kind in "iu":
        return IdType.INT
    if ids.dtype.kind == "U":
        return IdType.STR
    if ids.dtype.kind == "O" and ids.size:  # Python objects: all str, or all int
        arrow_type = _arrow_strings_or_none(ids)
        if pa.types.is_string(arrow_type):
            return IdType.STR
        if pa.types.is_integer(arrow_type):
            return IdType.INT
    raise TypeError(f"ids must be integers or strings, got dtype {ids.dtype}" + (f" (first: {ids[0]!r})" if ids.size else ""))


def _arrow_strings_or_none(ids: np.ndarray) -> pa.DataType:
    try:
        return pa.array(ids, from_pandas=False).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.null()


def as_id_array(ids: np.ndarray | Sequence[Any], id_type: IdType | None = None, *, unique: bool = True) -> np.ndarray:
    """``(N,)`` int64 (INT) or object array of str (STR), validated.

    Args:
        ids: the caller's ids.
        id_type: the index's id type; None infers it from ``ids``.
        unique: refuse duplicates.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if ids.size == 0:
        return np.empty(0, dtype=np.int64 if id_type is not IdType.STR else object)
    found = id_type_of(ids)
    if id_type is not None and found is not id_type:
        raise TypeError(f"this index is keyed by {id_type.value} ids, got {found.value} ids (first: {ids[0]!r})")
    if found is IdType.INT:
        ids = ids.astype(np.int64, copy=False)
        if ids.min() < 0:
            raise ValueError("integer ids must be >= 0 (-1 marks padding in search results)")
    else:
        strings = pa.array(ids, type=pa.string())
        if strings.null_count:
            raise ValueError(f"ids contain {strings.null_count} missing (null) values")
        ids = np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)
    if unique and len(pc.unique(pa.array(ids))) != ids.size:
        raise ValueError("ids contain duplicates")
    return ids


def pad_value(id_type: IdType | None) -> Any:
    return PAD_STR if id_type is IdType.STR else PAD_ID


def empty_ids(shape: tuple[int, ...], id_type: IdType | None) -> np.ndarray:
    """All-padding ids of ``shape`` for an index of ``id_type``."""
    if id_type is IdType.STR:
        return np.full(shape, PAD_STR, dtype=object)
    return np.full(shape, PAD_ID, dtype=np.int64)


def found_mask(ids: np.ndarray) -> np.ndarray:
    """True where a search result holds an id (not padding), for int and string results alike.

    >>> found_mask(np.array([[4, -1]])).tolist(), found_mask(np.array([["a", None]], dtype=object)).tolist()
    ([[True, False]], [[True, False]])
    """
    ids = np.asarray(ids)
    if ids.dtype == object:
        return ~pc.is_null(pa.array(ids.ravel(), type=pa.string())).to_numpy(zero_copy_only=False).reshape(ids.shape)
    return ids != PAD_ID


class IdMap:
    """String ids <-> int64 keys (position of the string in ``strings``); identity for ints.

    Keys of deleted strings are not reused, so a key always names one string.
    """

    def __init__(self, id_type: IdType | None = None, strings: np.ndarray | None = None) -> None:
        self.id_type = id_type
        self._strings = pa.array(np.asarray([] if strings is None else strings, dtype=str), type=pa.string())

    @property
    def strings(self) -> np.ndarray:
        """``(M,)`` every string id ever keyed, key order (a numpy unicode array, as saved)."""
        return np.asarray(self._strings.to_numpy(zero_copy_only=False), dtype=str)

    def check(self, ids: np.ndarray | Sequence[Any], *, unique: bool = True) -> np.ndarray:
        """``as_id_array`` against this map's type, fixing the type on first use."""
        ids = as_id_array(ids, self.id_type, unique=unique)
        if self.id_type is None and ids.size:
            self.id_type = id_type_of(ids)
        return ids

    def keys_for(self, ids: np.ndarray, *, add: bool) -> np.ndarray:
        """``(N,)`` int64 keys of checked ids; unknown strings get new keys if ``add``, else -1."""
        ids = self.check(ids, unique=False)
        if self.id_type is not IdType.STR:
            return ids.astype(np.int64, copy=False)
        values = pa.array(ids, type=pa.string())
        keys = pc.index_in(values, value_set=self._strings)
        if add and keys.null_count:
            new = pc.unique(pc.filter(values, pc.is_null(keys)))
            self._strings = pa.concat_arrays([self._strings, new])
            keys = pc.index_in(values, value_set=self._strings)
        return pc.fill_null(keys, PAD_ID).to_numpy(zero_copy_only=False).astype(np.int64)

    def to_ids(self, keys: np.ndarray) -> np.ndarray:
        """The caller's ids of int64 ``keys`` (any shape), padding (-1) kept as padding."""
        keys = np.asarray(keys, dtype=np.int64)
        if self.id_type is not IdType.STR:
            return keys
        out = np.full(keys.shape, PAD_STR, dtype=object)
        valid = keys >= 0
        out[valid] = np.asarray(self._strings.take(pa.array(keys[valid])).to_numpy(zero_copy_only=False), dtype=object)
        return out
