"""``recstack query``: the top-k items of each user vector from a saved item index.

Shape legend: U user vectors, D vector dim, K items per user.

The user vectors are the file ``recstack embed-users`` writes: ``.parquet`` with the user id
column and ``vector``, or ``.npy`` with the ids in ``<stem>.ids.npy`` beside it. The index is a
folder ``recstack index`` wrote (FAISS, exact or Milvus: ``load_index`` reads the backend from
its manifest, a Milvus index its uri and collection); its ``index_source.json`` names the item
id column. Ids come back as the run's own values, strings or integers::

    result = query_index("posts_milvus", "users.parquet", k=10)
    result.item_ids[0]  # array(['p300144', 'p300156', ...], dtype=object)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recstack.atomic import atomic_path
from recstack.errors import ConfigError, DataError
from recstack.retrieval.index import found_mask, load_index
from recstack.retrieval.multi_interest import search_interests

QUERY_BATCH_SIZE = 4096  # user vectors searched per index call
DEFAULT_USER_COLUMN = "user_id"  # the ids of a .npy file carry no column name
DEFAULT_ITEM_COLUMN = "item_id"  # an index folder without index_source.json


@dataclass(frozen=True)
class UserVectors:
    """``(U,)`` user ids (int64 or object str), ``(U, D)`` float32 vectors (``(U, K, D)`` for
    multi-interest users), the id column."""

    ids: np.ndarray
    vectors: np.ndarray
    column: str
    path: str


@dataclass(frozen=True)
class QueryResult:
    """The top ``k`` items of each user vector, best first.

    Attributes:
        user_ids: ``(U,)`` the users' ids as the vector file holds them.
        item_ids: ``(U, K)`` int64 (padding -1) or object str (padding None).
        scores: ``(U, K)`` float32 inner products (padding: -inf or whatever the index pads with).
        found: ``(U, K)`` bool, False on padding (fewer than ``k`` items in the index).
        user_column / item_column: the id columns' names.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    found: np.ndarray
    user_column: str
    item_column: str

    @property
    def k(self) -> int:
        return self.item_ids.shape[1]

    def table(self) -> pa.Table:
        """One row per (user, rank) hit: ``user_column, rank, item_column, score``."""
        users, ranks = np.nonzero(self.found)  # row-major: users in order, ranks ascending
        return pa.table({
            self.user_column: pa.array(self.user_ids[users]),
            "rank": pa.array(ranks + 1, pa.int32()),
            self.item_column: pa.array(self.item_ids[users, ranks]),
            "score": pa.array(self.scores[users, ranks], pa.float32()),
        })  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Every user: ``{"user_id": ..., "items": [...], "scores": [...]}`` (ids as given)."""
        return {
            "user_column": self.user_column,
            "item_column": self.item_column,
            "k": self.k,
            "results": [self.row(u) for u in range(len(self.user_ids))],
        }

    def row(self, u: int) -> dict[str, Any]:
        keep = self.found[u]
        return {self.user_column: _plain(self.user_ids[u]), "items": [_plain(i) for i in self.item_ids[u][keep]], "scores": [float(s) for s in self.scores[u][keep]]}


def read_user_vectors(path: str | Path) -> UserVectors:
    """The ids and vectors of an ``embed-users`` file (.parquet or .npy + .ids.npy)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        ids_path = path.with_suffix(".ids.npy")
        vectors = np.load(path, allow_pickle=False)
        ids = np.load(ids_path, allow_pickle=False) if ids_path.exists() else np.arange(len(vectors), dtype=np.int64)
        column = DEFAULT_USER_COLUMN
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "vector" not in table.column_names:
            raise DataError(f"no 'vector' column (found {table.column_names}); expected the file `recstack embed-users` writes", path=str(path), column="vector")
        others = [c for c in table.column_names if c != "vector"]
        column = others[0] if others else DEFAULT_USER_COLUMN
        ids = table.column(column).to_numpy(zero_copy_only=False) if others else np.arange(table.num_rows, dtype=np.int64)
        vectors = _vector_matrix(table.column("vector"), path)
    else:
        raise ConfigError(f"--vectors: expected a .parquet or .npy file of user vectors, got {str(path)!r}")
    if vectors.ndim not in (2, 3):
        raise DataError(f"user vectors must be a (users, dim) matrix or (users, interests, dim), got shape {vectors.shape}", path=str(path))
    if len(ids) != len(vectors):
        raise DataError(f"{len(ids)} ids for {len(vectors)} vectors", path=str(path))
    ids = ids.astype(object) if ids.dtype.kind == "U" else ids  # plain str values, like the index's
    return UserVectors(ids=ids, vectors=np.ascontiguousarray(vectors, dtype=np.float32), column=column, path=str(path))


def _vector_matrix(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """``(U, D)`` from a fixed-size or variable list column of equal-length vectors; ``(U, K, D)``
    from a fixed-size list of K such lists (multi-interest users)."""
    column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type) and (pa.types.is_fixed_size_list(column.type.value_type) or pa.types.is_list(column.type.value_type)):
        interests = column.type.list_size
        return _vector_matrix(pa.chunked_array([column.flatten()]), path).reshape(len(column), interests, -1)
    if column.null_count:
        raise DataError(f"{column.null_count} null vectors", path=str(path), column="vector")
    lengths = np.asarray(column.value_lengths()) if not pa.types.is_fixed_size_list(column.type) else np.full(len(column), column.type.list_size)
    if len(column) and (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise DataError(f"vectors have different lengths ({lengths[0]} and {lengths[row]})", path=str(path), row=row + 1, column="vector")
    dim = int(lengths[0]) if len(column) else 0
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), dim)


def index_id_column(index_folder: str | Path) -> str:
    """The item-id column an index was keyed by (its ``index_source.json``), else ``item_id``."""
    from recstack.workflows.export import INDEX_SOURCE_NAME

    source = Path(index_folder) / INDEX_SOURCE_NAME
    if not source.is_file():
        return DEFAULT_ITEM_COLUMN
    return json.loads(source.read_text()).get("id_column") or DEFAULT_ITEM_COLUMN


def query_index(index_folder: str | Path, vectors: str | Path | UserVectors, *, k: int = 10, batch_size: int = QUERY_BATCH_SIZE) -> QueryResult:
    """The top ``k`` items of every user vector in ``vectors`` from the index at ``index_folder``."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    users = vectors if isinstance(vectors, UserVectors) else read_user_vectors(vectors)
    if not Path(index_folder).is_dir():
        raise ConfigError(f"{index_folder}: no index folder (build one with `recstack index RUN --output {index_folder}`)")
    with load_index(index_folder) as index:
        if users.vectors.shape[-1] != index.dim:
            raise DataError(f"user vectors have dim {users.vectors.shape[-1]}, the index at {index_folder} holds dim {index.dim} (vectors of another run?)", path=users.path, column="vector")
        # (U, K, D) multi-interest users: each interest searches, merged per user by max score
        parts = [search_interests(index, users.vectors[start : start + batch_size], k) for start in range(0, len(users.ids), batch_size)]
    if parts:
        scores, item_ids = np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])  # (U, K)
    else:
        scores, item_ids = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return QueryResult(user_ids=users.ids, item_ids=item_ids, scores=scores, found=found_mask(item_ids), user_column=users.column, item_column=index_id_column(index_folder))


def write_results(result: QueryResult, output: str | Path) -> Path:
    """``.parquet`` or ``.csv``: one row per (user, rank) hit (``QueryResult.table``)."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"--output: expected a .parquet or .csv file, got {str(output)!r}")
    output.parent.mkdir(parents=True, exist_ok=True)
    table = result.table()
    with atomic_path(output) as tmp:
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, str(tmp))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, str(tmp))
    return output


def format_top_k(result: QueryResult, users: int = 5) -> str:
    """``c00060 -> p300144 0.9871, p300156 0.9750, ...`` for the first ``users`` users."""
    lines = []
    for u in range(min(users, len(result.user_ids))):
        row = result.row(u)
        hits = ", ".join(f"{item} {score:.4f}" for item, score in zip(row["items"], row["scores"]))
        lines.append(f"{row[result.user_column]} -> {hits or '(no items)'}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
