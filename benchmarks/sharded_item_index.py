"""Item vectors of a sharded two-tower model written shard by shard into FAISS, no table gathered.

A DSSM whose item table (``--rows`` x ``--dim``, hashed item ids: no vocabulary to fit) is
sharded row-wise over 2 gloo ranks (one torch thread each); a catalogue of ``--rows`` items with a
genre. ``write_item_vector_shards`` (each rank: the catalogue items of its own rows, the sharded
item tower, Parquet parts), then rank 0 streams the parts into a FAISS flat index
(``index_vector_shards``). Reported per rank: the item-table rows held, RSS after set-up, peak
RSS, the seconds to write the vectors; rank 0: the seconds to build the index.

    python benchmarks/sharded_item_index.py --rows 4000000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

GENRES = 100


def schema(rows: int, dim: int) -> dict:
    return {
        "label": None,
        "tables": {"item": {"dim": dim, "hash_buckets": rows}, "user": {"dim": dim, "hash_buckets": 1000}},
        "features": [
            {"name": "user_id", "kind": "categorical", "table": "user", "side": "user"},
            {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
            {"name": "genre", "kind": "categorical", "side": "item", "dim": 8},
        ],
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(rank: int, port: int, args: argparse.Namespace, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from recstack.data.preprocessor import Preprocessor
    from recstack.data.sources import DataSource
    from recstack.models import build_model
    from recstack.nn.embedding import deferred_tables
    from recstack.nn.sharded_inputs import table_weights, unpooled_features, use_torchrec_tables
    from recstack.retrieval.index import create_index
    from recstack.schema import Schema
    from recstack.training.sharded import shard_model
    from recstack.training.sharding_config import DistributedConfig
    from recstack.workflows.sharded_index import index_vector_shards, write_item_vector_shards

    out = Path(folder)
    train = DataSource(paths=(str(out / "train.parquet"),))
    preprocessor = Preprocessor(Schema.from_dict(schema(args.rows, args.dim)))
    preprocessor.fit(train)
    with deferred_tables():  # as a sharded run builds it: tables on meta
        model = build_model("dssm", preprocessor.feature_map(), {"hidden_dims": [128, args.out_dim]})
    probe = preprocessor.transform(next(train.chunks()).records, with_label=False)
    unpooled = unpooled_features(model, lambda: model(probe))
    weights = {k: v.detach() for k, v in table_weights(model).items()}
    use_torchrec_tables(model, unpooled=unpooled, device="meta")
    config = DistributedConfig.from_dict({"embeddings": "sharded", "tables": {"item": {"sharding": "row_wise"}}})
    sharded = shard_model(model, config, lr=0.01, device=torch.device("cpu"), weights=weights)
    del weights, probe
    setup_rss = rss_mb()
    dist.barrier()
    started = time.perf_counter()
    shard = write_item_vector_shards(sharded, preprocessor, DataSource(paths=(str(out / "items.parquet"),)), out / "vectors", device=torch.device("cpu"))
    dist.barrier()
    write_seconds = time.perf_counter() - started
    result = {
        "rank": rank,
        "table_rows": shard.num_rows,
        "table_mb": shard.num_rows * args.dim * 4 / 2**20,
        "held_rows": shard.held_rows,
        "items": shard.items,
        "parts": shard.parts,
        "setup_rss_mb": setup_rss,
        "write_seconds": write_seconds,
    }
    if rank == 0:
        started = time.perf_counter()
        index = create_index("faiss", dim=args.out_dim, kind="flat")
        result["indexed"] = index_vector_shards(out / "vectors", index)
        result["index_seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out, f"result{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000, help="item-table rows (hash buckets) and catalogue items")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out-dim", type=int, default=32, help="the towers' output dim (the index's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        items = pa.table({"item_id": np.arange(args.rows, dtype=np.int64), "genre": rng.integers(0, GENRES, args.rows)})
        pq.write_table(items, Path(folder, "items.parquet"), row_group_size=65_536)
        train = pa.table(
            {"user_id": rng.integers(0, 1000, 2000), "item_id": rng.integers(0, args.rows, 2000), "genre": np.arange(2000) % GENRES}
        )
        pq.write_table(train, Path(folder, "train.parquet"))
        del items
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(worker, args=(port, args, folder), nprocs=2, join=True)
        for rank in range(2):
            print(Path(folder, f"result{rank}.json").read_text())


if __name__ == "__main__":
    main()
