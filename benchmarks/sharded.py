"""Per-rank memory and CPU throughput: a large table sharded row-wise over 2 ranks (TorchRec)
vs replicated on both ranks (DDP).

A DeepFM over 26 categorical fields of dim ``--dim``: one large table of ``--rows`` ids and 25
small ones (1,000 ids), random ids (uniform; the large field's ids over all its rows), random
labels. Each mode runs in 2 fresh gloo processes with one torch thread each:

* ``sharded``: the run's path (``workflows/sharded.py``): the model built with its tables deferred
  (on ``meta``), turned into TorchRec collections, planned (the large table constrained
  row-wise), ``DistributedModelParallel``, each rank drawing its shards' rows; fused row-wise
  Adagrad on the tables, Adam on the dense part;
* ``replicated``: the same model with ``sparse_embeddings`` (only the batch's rows get gradients),
  DDP, sparse Adagrad on the tables (one accumulator per value: recstack's large-table setting),
  Adam on the dense part.

Reported per rank: table bytes held (shard sizes from the plan; the full tables when replicated),
RSS after set-up, peak RSS (``ru_maxrss``), and samples/s over ``--steps`` timed steps after 3
warm-up steps (both ranks' rows).

    python benchmarks/sharded.py --rows 5000000 --dim 64 --batch 2048 --steps 20
    python benchmarks/sharded.py --rows 20000000 --modes sharded --budget-mb 4096
    python benchmarks/sharded.py --rows 20000000 --modes replicated --budget-mb 4096   # refused
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

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SMALL_ROWS = 1000
FIELDS = 26


def feature_map(rows: int, dim: int):
    from recstack.data.feature_map import FeatureMap, TableInfo
    from recstack.schema import Schema

    names = [f"c{i}" for i in range(FIELDS)]
    schema = Schema.from_dict({"label": "label", "features": [{"name": n, "kind": "categorical", "dim": dim} for n in names]})
    tables = {n: TableInfo(name=n, num_rows=(rows if n == "c0" else SMALL_ROWS) + 2, dim=dim) for n in names}
    return FeatureMap(schema=schema, tables=tables)


def batches(rows: int, size: int, seed: int):
    from recstack.data.batch import Batch

    generator = torch.Generator().manual_seed(seed)
    while True:
        ids = {f"c{i}": torch.randint(2, (rows if i == 0 else SMALL_ROWS) + 2, (size,), generator=generator) for i in range(FIELDS)}
        yield Batch(ids=ids, label=torch.randint(0, 2, (size,), generator=generator).float())


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from torch.nn.parallel import DistributedDataParallel

    from recstack.models import build_model
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.training.config import TrainerConfig
    from recstack.training.optim import build_optimizers

    fmap = feature_map(args.rows, args.dim)
    task = BinaryClassificationTask()
    from recstack.nn.embedding import deferred_tables

    torch.manual_seed(0)
    params = {"hidden_dims": [128, 64], "sparse_embeddings": args.mode == "replicated"}
    if args.mode == "replicated" and args.budget_mb is not None:  # the run's check, before allocating
        from recstack.errors import ConfigError
        from recstack.training.replicated_budget import check_replicated_budget
        from recstack.training.sharding_config import DistributedConfig

        with deferred_tables(True):
            probe = build_model("deepfm", fmap, params)
        trainer = TrainerConfig(sparse_embeddings=True, optimizer="adagrad", lr=1e-3)
        try:
            check_replicated_budget(probe, DistributedConfig(memory_budget_mb=args.budget_mb), trainer)
        except ConfigError as error:
            result = {"mode": args.mode, "rank": rank, "error": f"ConfigError: {error}", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            Path(out, f"{args.mode}{rank}.json").write_text(json.dumps(result))
            dist.barrier()
            dist.destroy_process_group()
            return
        del probe
    with deferred_tables(args.mode == "sharded"):  # as a sharded run builds it: tables on meta
        model = build_model("deepfm", fmap, params)
    data = batches(args.rows, args.batch, seed=rank)
    if args.mode == "sharded":
        from recstack.nn.sharded_inputs import table_weights, unpooled_features, use_torchrec_tables
        from recstack.training.sharded import shard_model
        from recstack.training.sharding_config import DistributedConfig

        first = next(data)
        unpooled = unpooled_features(model, lambda: task.loss(model, first))
        weights = {k: v.detach() for k, v in table_weights(model).items()}
        use_torchrec_tables(model, unpooled=unpooled, device="meta")
        config = DistributedConfig.from_dict(
            {"embeddings": "sharded", "tables": {"c0": {"sharding": "row_wise"}}, "memory_budget_mb": args.budget_mb}
        )
        sharded = shard_model(model, config, lr=1e-3, device=torch.device("cpu"), weights=weights)  # draws its shards
        del weights, first
        trained = sharded.dmp
        dense = torch.optim.Adam(sharded.dense_parameters(), lr=1e-3)
        optimizers = [dense, sharded.fused_optimizer]
        table_bytes = sharded.report["bytes_per_rank"][rank]
        plan = {name: t["sharding_type"] for name, t in sharded.report["tables"].items() if name in ("c0", "c1", "c0_d1")}
    else:
        trained = DistributedDataParallel(model)
        optimizers = build_optimizers(model, TrainerConfig(sparse_embeddings=True, optimizer="adagrad", lr=1e-3))
        table_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if ".tables." in n)
        plan = {"all": "replicated"}
    import gc

    gc.collect()
    setup_rss = rss_mb()

    def step() -> None:
        loss = task.loss(trained, next(data))
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    dist.barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    dist.barrier()
    seconds = time.perf_counter() - started
    result = {
        "mode": args.mode,
        "rank": rank,
        "table_mb": table_bytes / 2**20,
        "setup_rss_mb": setup_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples_per_second": 2 * args.batch * args.steps / seconds,
        "plan": plan,
    }
    Path(out, f"{args.mode}{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2048, help="rows per rank per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["sharded", "replicated"])
    parser.add_argument("--budget-mb", type=float, default=None, help="distributed.memory_budget_mb per rank (sharded: the planner's; replicated: the run's check, a ConfigError when the tables exceed it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        for mode in args.modes:
            args.mode = mode
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            mp.spawn(worker, args=(port, args, out), nprocs=2, join=True)
            for rank in range(2):
                print(json.dumps(json.loads(Path(out, f"{mode}{rank}.json").read_text())))


if __name__ == "__main__":
    main()
