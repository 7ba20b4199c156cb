"""A Milvus collection as a ``VectorIndex``, through pymilvus's ``MilvusClient``.

Shape legend: Q queries, B queries per request, N indexed vectors, D dim, K top-k.

The same code talks to a Milvus server (``uri="http://host:19530"``) and to Milvus Lite
(``uri`` a local path ending in ``.db``; with pymilvus 3 / milvus-lite 3 that path is a data
folder served in-process over gRPC). Things this class handles so callers don't have to:

* Writes are searchable at once (the collection is created with ``Strong`` consistency; the
  pymilvus default is ``Bounded``, which hides fresh writes from searches for a moment).
* Milvus Lite (3.2) searches rows that are not in an indexed segment exactly: correct, but
  slow. It builds segment indexes synchronously only in ``load_collection``; after a flush
  the build is left to a background task that may not have run, and ``describe_index``
  reports "Finished" either way. So ``flush()`` on Lite releases and reloads the collection,
  which builds missing segment indexes (and re-reads built ones from disk). Call it after a
  bulk load, not after every small write. On a server, ``flush()`` only seals segments.
* A reopened Lite collection starts released (searching raises): the constructor loads it.
* ``search`` asks only for the id field: with ``output_fields`` None or ``[]`` Milvus Lite
  returns every vector with every hit.
* Milvus ``insert`` does not check primary keys, so a repeated id would become a second row:
  ``add`` queries for existing ids first and refuses them; ``upsert`` replaces.
* Milvus Lite locks its data folder to one process. ``close()`` stops this process's Lite
  server for the path (releasing the lock), which also cuts off any other client in this
  process that uses the same ``.db`` path.
* Limits: K (plus excluded ids) at most 16,384 per query, Milvus's topk cap.
* Ids: int ids are an INT64 primary key, string ids a VARCHAR one (``id_type="str"``, at most
  ``max_id_length`` characters), so Milvus returns the caller's ids as they are; no mapping
  table outside Milvus that another writer could leave stale. Lookups and deletes write the
  ids into an ``id in [...]`` filter as JSON string literals (quotes and backslashes escaped;
  Milvus Lite 3.2 has no filter templates, and pymilvus's own ``get`` / ``delete(ids=)`` do
  not escape).
* Transient failures (seen: a Lite flush failing under load while inserting) are retried
  with exponential backoff, at most ``retry_attempts`` tries within ``retry_budget_s``; then a
  ``RecstackError`` names the operation, collection, uri and the last error. pymilvus's
  client-side errors (bad parameters, wrong data types) are raised at once. Retried writes are upserts, so a write
  that reached Milvus before its reply was lost is not stored twice.

Milvus keeps its own data: ``save`` writes only a manifest (uri, collection, settings) and
``load`` reconnects. The metric is always inner product ("IP").

pymilvus is imported when an index is built, so ``recstack`` imports without it.
"""

from __future__ import annotations

import json
import os
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from recstack.errors import RecstackError
from recstack.retrieval.index.base import (
    VectorIndex,
    check_pairs,
    empty_results,
    read_manifest,
    register_index,
    write_manifest,
)
from recstack.retrieval.index.ids import IdType, as_id_array

T = TypeVar("T")

ID_FIELD = "id"
VECTOR_FIELD = "vector"
METRIC = "IP"
MAX_TOPK = 16_384  # Milvus rejects larger limits
WRITE_BATCH_BYTES = 16 * 2**20  # well under gRPC's 64 MiB message cap
ID_QUERY_BATCH = 4_096  # ids per "id in [...]" expression
MAX_ID_LENGTH = 512  # VARCHAR primary key length (characters) for string ids
RETRY_ATTEMPTS = 6  # tries of one operation (waits 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s between)
RETRY_BUDGET_S = 30.0  # wall-clock time one operation may spend retrying
RETRY_FIRST_WAIT_S = 0.1  # doubled after each failure, capped at RETRY_MAX_WAIT_S
RETRY_MAX_WAIT_S = 2.0


class MilvusIndexType(str, Enum):
    FLAT = "FLAT"
    HNSW = "HNSW"
    IVF_FLAT = "IVF_FLAT"


def import_pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as err:
        raise ImportError(
            "MilvusIndex needs pymilvus (and milvus-lite for .db paths); install them with: "
            "pip install 'recstack[milvus]'"
        ) from err
    return pymilvus


def _transient_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(what a retry may cure: Milvus's errors, connection and timeout failures; what it cannot:
    pymilvus's checks of the request itself, raised before anything is sent)."""
    from pymilvus import exceptions as e

    retry: list[type[BaseException]] = [e.MilvusException, ConnectionError, TimeoutError]
    try:
        import grpc

        retry.append(grpc.RpcError)
    except ImportError:
        pass
    permanent = (e.ParamError, e.DataTypeNotMatchException, e.DataNotMatchException, e.DataTypeNotSupportException, e.PrimaryKeyException, e.CollectionNotExistException)
    return tuple(retry), permanent


def _in_filter(ids: list[Any]) -> str:
    """``id in [...]`` with each id a literal: ints as they are, strings JSON-escaped."""
    return f"{ID_FIELD} in {json.dumps(ids, ensure_ascii=False)}"


@register_index("milvus")
class MilvusIndex(VectorIndex):
    """Inner-product search in a Milvus collection with an ``id`` (INT64 or VARCHAR primary key)
    and a ``vector`` field.

    Opens the collection if it exists (its dim and index type must match; its id type is
    read from it), else creates it.

    Args:
        dim: D, the vector dimension.
        uri: ``"http://host:19530"`` for a server, or a local ``".db"`` path for Milvus Lite.
        collection: collection name.
        index_type: "FLAT" (exact), "HNSW" or "IVF_FLAT".
        hnsw_m, ef_construction, ef_search: HNSW build and search sizes (ef is raised to K).
        nlist, nprobe: IVF_FLAT lists, and lists scanned per query.
        token: server credentials ("user:password" or an API key); never written to disk.
        query_batch: queries per search request (B).
        id_type: "int" or "str" for a new collection (None: an existing collection's, else int).
        max_id_length: the VARCHAR length of a new string-keyed collection.
        retry_attempts: tries of one operation before giving up (1: no retry).
        retry_budget_s: seconds one operation may spend retrying transient failures.

    Example (see tests/retrieval/index/test_milvus_index.py)::

        index = MilvusIndex(dim=64, uri=str(tmp_path / "items.db"), collection="items")
        index.add(ids, vectors)       # ids (N,) int64, vectors (N, 64) float32
        index.flush()                 # Lite: build the HNSW index over these rows
        scores, top_ids = index.search(queries, k=10)
        index.close()
    """

    def __init__(
        self,
        *,
        dim: int,
        uri: str,
        collection: str,
        index_type: MilvusIndexType | str = MilvusIndexType.HNSW,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int = 128,
        nprobe: int = 16,
        token: str = "",
        query_batch: int = 1_024,
        id_type: IdType | str | None = None,
        max_id_length: int = MAX_ID_LENGTH,
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_budget_s: float = RETRY_BUDGET_S,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        pymilvus = import_pymilvus()
        self._retryable, self._permanent = _transient_errors()
        self.retry_attempts, self.retry_budget_s = max(1, retry_attempts), retry_budget_s
        self.max_id_length = max_id_length
        self.is_lite = uri.endswith(".db")
        # Lite serves the folder by absolute path; keep that so a saved manifest works from any cwd
        self.uri = os.path.abspath(uri) if self.is_lite else uri
        self.collection = collection
        self.index_type = MilvusIndexType(index_type)
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.nlist, self.nprobe = nlist, nprobe
        self.query_batch = query_batch
        self._dim = dim
        self._client: Any = pymilvus.MilvusClient(uri=self.uri, token=token)
        asked = None if id_type is None else IdType(id_type)
        if self._client.has_collection(collection):
            self._id_type = self._check_existing(pymilvus.DataType, asked)
            self._retry("load_collection", lambda _: self._client.load_collection(collection))  # a reopened collection starts released
        else:
            self._id_type = asked or IdType.INT
            self._create(pymilvus.DataType)

    @property
    def id_type(self) -> IdType:
        return self._id_type

    def _retry(self, operation: str, call: Callable[[int], T]) -> T:
        """``call(attempt)`` (attempt 0 first), retried on transient errors with doubling waits,
        at most ``retry_attempts`` tries within ``retry_budget_s``; then a ``RecstackError``
        naming the operation, the collection, the uri and the last error."""
        deadline = time.monotonic() + self.retry_budget_s
        wait, attempt = RETRY_FIRST_WAIT_S, 0
        while True:
            try:
                return call(attempt)
            except self._permanent:
                raise
            except self._retryable as error:
                attempt += 1
                if attempt >= self.retry_attempts or time.monotonic() + wait > deadline:
                    raise RecstackError(
                        f"Milvus {operation} on collection {self.collection!r} at {self.uri} failed "
                        f"{attempt} time(s) (retry budget: {self.retry_attempts} tries, "
                        f"{self.retry_budget_s:g} s); last error: {type(error).__name__}: {error}"
                    ) from error
                time.sleep(wait)
                wait = min(2 * wait, RETRY_MAX_WAIT_S)

    def _create(self, data_type: Any) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        if self._id_type is IdType.STR:
            schema.add_field(ID_FIELD, data_type.VARCHAR, is_primary=True, max_length=self.max_id_length)
        else:
            schema.add_field(ID_FIELD, data_type.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, data_type.FLOAT_VECTOR, dim=self._dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_name=VECTOR_FIELD,
            index_type=self.index_type.value,
            metric_type=METRIC,
            params=self._build_params(),
        )
        self._client.create_collection(
            self.collection, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def _check_existing(self, data_type: Any, asked: IdType | None) -> IdType:
        """Check the collection's vector field and index; return its id type."""
        fields = self._client.describe_collection(self.collection)["fields"]
        vector = next((f for f in fields if f["name"] == VECTOR_FIELD), None)
        if vector is None or int(vector["params"]["dim"]) != self._dim:
            raise ValueError(
                f"collection {self.collection!r} at {self.uri} has no {VECTOR_FIELD!r} field "
                f"of dim {self._dim}: {fields}"
            )
        key = next((f for f in fields if f["name"] == ID_FIELD), {})
        found = IdType.STR if key.get("type") == data_type.VARCHAR else IdType.INT
        if key.get("type") == data_type.VARCHAR:
            self.max_id_length = int((key.get("params") or {}).get("max_length", self.max_id_length))
        if asked is not None and asked is not found:
            raise ValueError(f"collection {self.collection!r} at {self.uri} is keyed by {found.value} ids; asked for {asked.value}")
        names = self._client.list_indexes(self.collection, field_name=VECTOR_FIELD)
        index = self._client.describe_index(self.collection, index_name=names[0]) if names else {}
        if index.get("index_type") != self.index_type.value or index.get("metric_type") != METRIC:
            raise ValueError(
                f"collection {self.collection!r} has a {index.get('index_type')}/"
                f"{index.get('metric_type')} index; asked for {self.index_type.value}/{METRIC}"
            )
        return found

    def _build_params(self) -> dict[str, int]:
        if self.index_type is MilvusIndexType.HNSW:
            return {"M": self.hnsw_m, "efConstruction": self.ef_construction}
        if self.index_type is MilvusIndexType.IVF_FLAT:
            return {"nlist": self.nlist}
        return {}

    def _search_params(self, k: int) -> dict[str, int]:
        if self.index_type is MilvusIndexType.HNSW:
            return {"ef": max(self.ef_search, k)}  # Milvus requires ef >= limit
        if self.index_type is MilvusIndexType.IVF_FLAT:
            return {"nprobe": min(self.nprobe, self.nlist)}
        return {}

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        rows = self._retry("count", lambda _: self._client.query(self.collection, filter="", output_fields=["count(*)"]))
        return int(rows[0]["count(*)"])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = self._checked(ids, vectors)
        present = self._existing(ids)
        if present.size:
            raise ValueError(f"ids already indexed (use upsert to replace): {present[:10].tolist()}")
        self._write("insert", ids, vectors)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = self._checked(ids, vectors)
        self._write("upsert", ids, vectors)

    def delete(self, ids: np.ndarray) -> None:
        ids = as_id_array(ids, self._id_type, unique=False)
        for start in range(0, ids.size, ID_QUERY_BATCH):
            chunk = ids[start : start + ID_QUERY_BATCH].tolist()
            self._retry("delete", lambda _: self._client.delete(self.collection, filter=_in_filter(chunk)))

    def flush(self) -> None:
        """Persist buffered writes; on Milvus Lite also build the ANN index over them."""
        self._retry("flush", self._flush_once)

    def _flush_once(self, attempt: int) -> None:
        self._client.flush(self.collection)
        if self.is_lite:  # load() is Lite's only synchronous index build (see module docstring)
            self._client.release_collection(self.collection)
            self._client.load_collection(self.collection)

    def _checked(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = check_pairs(ids, vectors, self._dim, self._id_type)
        if self._id_type is IdType.STR and ids.size:
            too_long = [i for i in ids[np.char.str_len(ids.astype(str)) > self.max_id_length][:3]]
            if too_long:
                raise ValueError(f"collection {self.collection!r} keeps ids of at most {self.max_id_length} characters; got {too_long!r}")
        return ids, vectors

    def _existing(self, ids: np.ndarray) -> np.ndarray:
        """The ids among ``ids`` that the collection already holds."""
        found = []
        for start in range(0, ids.size, ID_QUERY_BATCH):
            chunk = ids[start : start + ID_QUERY_BATCH].tolist()
            rows = self._retry(
                "query",
                lambda _: self._client.query(self.collection, filter=_in_filter(chunk), output_fields=[ID_FIELD]),
            )
            found.extend(row[ID_FIELD] for row in rows)
        return np.asarray(found, dtype=np.int64 if self._id_type is IdType.INT else object)

    def _write(self, operation: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        # MilvusClient takes rows (one dict per entity); batches keep each request small
        batch = max(1, WRITE_BATCH_BYTES // (4 * self._dim))
        for start in range(0, ids.size, batch):
            chunk_ids = ids[start : start + batch].tolist()
            chunk_vectors = vectors[start : start + batch]
            rows = [{ID_FIELD: i, VECTOR_FIELD: v} for i, v in zip(chunk_ids, chunk_vectors)]

            def write(attempt: int, rows: list[dict[str, Any]] = rows) -> Any:
                # a retried insert may have landed before its reply was lost: upsert is idempotent
                method = self._client.insert if operation == "insert" and attempt == 0 else self._client.upsert
                return method(self.collection, rows)

            self._retry(operation, write)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} results per query, asked for k={k}")
        return super().search(queries, k, exclude)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = empty_results(queries.shape[0], k, self._id_type)  # (Q, K) each, filled below
        limit = min(k, MAX_TOPK)  # excluded ids past the cap may leave a row short; it is padded
        search_params = {"metric_type": METRIC, "params": self._search_params(limit)}
        for start in range(0, queries.shape[0], self.query_batch):
            block = queries[start : start + self.query_batch]  # (B, D)
            results = self._retry(
                "search",
                lambda _: self._client.search(
                    self.collection,
                    data=block,
                    limit=limit,
                    output_fields=[ID_FIELD],  # None or [] would ship every hit's vector back
                    search_params=search_params,
                    anns_field=VECTOR_FIELD,
                ),
            )
            for row, hits in enumerate(results, start=start):
                n_hits = len(hits)
                ids[row, :n_hits] = hits.ids
                scores[row, :n_hits] = hits.distances
        return scores, ids

    def save(self, path: str | os.PathLike) -> None:
        """Persist writes, then write the manifest that ``load`` reconnects with (no data, no
        token)."""
        self._retry("flush", lambda _: self._client.flush(self.collection))
        config = {
            "dim": self._dim,
            "uri": self.uri,
            "collection": self.collection,
            "index_type": self.index_type.value,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "query_batch": self.query_batch,
            "id_type": self._id_type.value,
            "max_id_length": self.max_id_length,
            "retry_attempts": self.retry_attempts,
            "retry_budget_s": self.retry_budget_s,
        }
        write_manifest(Path(path), self.backend, config)

    @classmethod
    def load(cls, path: str | os.PathLike, *, token: str = "") -> "MilvusIndex":
        config = read_manifest(path)
        for key in ("backend", "format_version"):
            config.pop(key)
        return cls(**config, token=token)

    def close(self) -> None:
        """Persist writes and disconnect; for Milvus Lite also stop this process's server for
        the path, releasing the folder lock so another process (or a fresh open) can use it."""
        if self._client is None:
            return
        client, self._client = self._client, None
        try:  # a failed flush is raised, but the connection and the Lite lock are released anyway
            self._retry("flush", lambda _: client.flush(self.collection))
        finally:
            client.close()
            if self.is_lite:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
