"""Item vectors of a sharded two-tower run, shard by shard, into an ANN index: no table gathered.

For item tables too big for one host (``distributed.gather_tables: never``, or ``auto`` over the
budget) no rank ever holds the whole item table:

1. each rank owns a range of item-table rows: for a row-wise sharded item-id table, the rows
   of its own shard (the plan's offsets); otherwise an even split of the rows;
2. every rank streams the catalogue (ids and item features only), keeps the items whose row it
   owns, and runs the *sharded* model's item tower on them: the lookups are TorchRec's
   all-to-alls, so every rank runs the same number of forwards (a rank out of items runs an
   empty batch); the item tower's other tables (genre, ...) stay sharded too;
3. each rank writes its vectors as Parquet part files (``item_vectors/part-r<rank>-<n>.parquet``,
   columns ``id`` (the catalogue's raw item id) and ``vector``), each written atomically;
4. rank 0 streams the part files into the index in bounded batches (:func:`index_vector_shards`):
   FAISS, exact, or Milvus. Milvus Lite locks its data folder to one process, so ranks never
   write to it concurrently: rank 0 is the one writer (a Milvus server takes the same path).

Shape legend: B items per forward, D vector dim.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from recstack.atomic import atomic_path
from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, DataError
from recstack.export.retrieval_run import EMBED_BATCH_SIZE
from recstack.models.retrieval_contract import require_retrieval_model
from recstack.retrieval.index.base import VectorIndex
from recstack.training.sharded import ROW_WISE_TYPES, ShardedModel

__all__ = ["ItemShard", "VECTORS_FOLDER", "index_vector_shards", "item_row_range", "read_vector_shards", "write_item_vector_shards"]

VECTORS_FOLDER = "item_vectors"
PART_PATTERN = "part-r*.parquet"
INDEX_BATCH_ROWS = 65_536  # vectors rank 0 reads from the part files and adds per call


@dataclass(frozen=True)
class ItemShard:
    """What one rank embedded: its rows of the item-id table and what it held of that table."""

    table: str  # the TorchRec table of the item id feature
    num_rows: int  # rows of the whole table
    start: int  # item-table rows [start, stop) this rank embeds
    stop: int
    held_rows: int  # rows of the table in this rank's own shards (0 when another rank holds it)
    items: int  # catalogue items embedded and written by this rank
    parts: int  # part files written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_row_range(sharded: ShardedModel, item_feature: str, *, rank: int, world_size: int) -> tuple[str, int, int, int]:
    """``(table, num_rows, start, stop)``: the item-table rows this rank embeds. A row-wise
    sharded table: the rows of this rank's shards (contiguous); otherwise an even split."""
    table = next((s for s in sharded.tables.specs.values() if any(f.name == item_feature for f in s.features)), None)
    if table is None:
        raise ConfigError(f"the item id feature {item_feature!r} is not read from any sharded table")
    planned = sharded.report["tables"].get(table.name, {})
    if planned.get("sharding_type") in ROW_WISE_TYPES:
        mine = [s for s in planned["shards"] if s["rank"] == rank]
        if not mine:
            return table.name, table.num_rows, 0, 0
        start = min(s["offsets"][0] for s in mine)
        return table.name, table.num_rows, start, start + sum(s["sizes"][0] for s in mine)
    bounds = np.linspace(0, table.num_rows, world_size + 1).round().astype(int)
    return table.name, table.num_rows, int(bounds[rank]), int(bounds[rank + 1])


def held_rows(sharded: ShardedModel, table: str) -> int:
    """Rows of ``table`` in this rank's local shards (the most a rank holds of it at once)."""
    for key, value in sharded.module.state_dict().items():
        if key.endswith(f".{table}.weight"):
            if hasattr(value, "local_shards"):
                return sum(int(s.tensor.shape[0]) for s in value.local_shards())
            return int(value.shape[0])  # data parallel: whole on every rank
    return 0


@torch.no_grad()
def write_item_vector_shards(
    sharded: ShardedModel,
    preprocessor: Preprocessor,
    catalog: DataSource,
    folder: str | os.PathLike,
    *,
    device: torch.device,
    batch_size: int = EMBED_BATCH_SIZE,
) -> ItemShard:
    """Every rank embeds the catalogue items whose item-table row it owns with the sharded item
    tower and writes them into ``folder`` as Parquet parts (see the module docstring).
    Collective: every rank calls it. Returns this rank's :class:`ItemShard`.

    Raises:
        DataError: the catalogue lacks the item id column or repeats an id.
    """
    module = sharded.module
    retrieval = require_retrieval_model(module, where="sharded item vectors")
    item_feature = retrieval.item_id_feature
    features = list(retrieval.item_feature_names)
    rank, world = dist.get_rank(), dist.get_world_size()
    table, num_rows, start, stop = item_row_range(sharded, item_feature, rank=rank, world_size=world)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"part-r{rank:05d}-*.parquet"):
        stale.unlink()
    column = preprocessor.schema[item_feature].column
    columns = list(dict.fromkeys([column, *preprocessor.schema.feature_columns(features)]))
    mine = _own_items(preprocessor, catalog, columns, column, features, item_feature, start, stop, batch_size)
    was_training = module.training
    module.eval()
    empty: Batch | None = None
    items = parts = 0
    try:
        current = next(mine, None)
        while _any_rank(current is not None, device):
            if current is None:  # out of items: an empty forward keeps the all-to-alls in step
                empty = empty if empty is not None else _empty_batch(preprocessor, catalog, columns, features)
                retrieval.encode_item(empty.to(device))
            else:
                ids, batch = current
                vectors = retrieval.encode_item(batch.to(device)).float().cpu().numpy()  # (B, D)
                _write_part(folder / f"part-r{rank:05d}-{parts:06d}.parquet", ids, vectors)
                items, parts = items + len(ids), parts + 1
            current = next(mine, None)
    finally:
        module.train(was_training)
    return ItemShard(table=table, num_rows=num_rows, start=start, stop=stop, held_rows=held_rows(sharded, table), items=items, parts=parts)


def _own_items(
    preprocessor: Preprocessor, catalog: DataSource, columns: list[str], column: str, features: list[str],
    item_feature: str, start: int, stop: int, batch_size: int,
) -> Iterator[tuple[pa.Array, Batch]]:
    """``(raw ids, item batch)`` of at most ``batch_size`` catalogue items whose item-table row
    is in ``[start, stop)``, streamed chunk by chunk (no whole catalogue in memory)."""
    for chunk in catalog.chunks(columns=columns):
        records = chunk.records
        if column not in records.schema.names:
            raise DataError(f"the item catalogue has no item id column {column!r}", path=",".join(catalog.paths), column=column)
        batch = preprocessor.transform(records, features=features, with_label=False)
        rows = batch.ids[item_feature]  # (N,) item-table rows
        keep = ((rows >= start) & (rows < stop)).nonzero().squeeze(1)  # (K,)
        if not len(keep):
            continue
        ids = records.column(column).take(pa.array(keep.numpy()))
        batch = batch.select(keep)
        for offset in range(0, len(keep), batch_size):
            yield ids.slice(offset, batch_size), batch.select(slice(offset, offset + batch_size))


def _empty_batch(preprocessor: Preprocessor, catalog: DataSource, columns: list[str], features: list[str]) -> Batch:
    """A batch of no items with the item tower's features (a rank without items of its own)."""
    for chunk in catalog.chunks(columns=columns):
        return preprocessor.transform(chunk.records.slice(0, 0), features=features, with_label=False)
    raise DataError("the item catalogue is empty", path=",".join(catalog.paths))


def _any_rank(flag: bool, device: torch.device) -> bool:
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _write_part(path: Path, ids: pa.Array, vectors: np.ndarray) -> None:
    """One part file ``{id, vector (D float32)}``, written atomically."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_vector_shards(folder: str | os.PathLike, *, batch_rows: int = INDEX_BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids (B,), vectors (B, D) float32)`` from every part file in ``folder``, at most
    ``batch_rows`` at a time (one record batch of one part file in memory)."""
    parts = sorted(Path(folder).glob(PART_PATTERN))
    if not parts:
        raise DataError(f"no item vector parts ({PART_PATTERN}) in {folder}", path=str(folder))
    for part in parts:
        for records in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
            vectors = records.column("vector")
            dim = vectors.type.list_size
            flat = vectors.values.to_numpy(zero_copy_only=False)
            yield records.column("id").to_numpy(zero_copy_only=False), flat.reshape(-1, dim).astype(np.float32, copy=False)


def index_vector_shards(folder: str | os.PathLike, index: VectorIndex, *, batch_rows: int = INDEX_BATCH_ROWS) -> int:
    """Add every part file's vectors to ``index`` in batches of at most ``batch_rows``; the
    number of vectors added. One process (rank 0) calls it."""
    from recstack.retrieval.index import MilvusIndex

    added = 0
    for ids, vectors in read_vector_shards(folder, batch_rows=batch_rows):
        index.add(ids, vectors)
        added += len(ids)
    if isinstance(index, MilvusIndex):
        index.flush()  # Lite builds the ANN index over the loaded rows here
    return added
