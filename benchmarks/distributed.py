"""Training throughput of DeepFM with 1 and 2 processes (DDP, gloo) on synthetic CTR data.

    .venv/bin/python benchmarks/distributed.py --rows 40000 --epochs 2

Runs ``recstack train CONFIG`` and ``recstack train CONFIG --nproc 2`` on the same Parquet file
(row groups of 2,048 rows so both ranks get a share) and prints the training loop's samples/s
from metrics.json (all ranks' rows / wall time of Trainer.fit, evaluation included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

SCHEMA = {
    "label": "label",
    "embedding_dim": 16,
    "features": [{"name": f"c{i}", "kind": "categorical"} for i in range(8)]
    + [{"name": f"n{i}", "kind": "numeric"} for i in range(4)],
}


def write_data(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    columns = {f"c{i}": rng.zipf(1.3, rows) % 5000 for i in range(8)}
    columns.update({f"n{i}": rng.normal(size=rows).astype(np.float32) for i in range(4)})
    logit = sum(((columns[f"c{i}"] * 2654435761) % 7 - 3) * 0.2 for i in range(8)) + columns["n0"]
    columns["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    pq.write_table(pa.table(columns), path, row_group_size=2048)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512, help="per process")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="recstack_ddp_bench_"))
    write_data(folder / "train.parquet", args.rows, 0)
    write_data(folder / "valid.parquet", args.rows // 8, 1)
    results = {}
    for nproc in (1, 2):
        config = {
            "data": {"train": str(folder / "train.parquet"), "valid": str(folder / "valid.parquet")},
            "schema": SCHEMA,
            "model": {"name": "deepfm", "params": {"hidden_dims": [256, 128]}},
            "loader": {"batch_size": args.batch_size, "shuffle_buffer": 0},
            "trainer": {"epochs": args.epochs, "lr": 0.001, "device": "cpu", "progress": False},
            "output": str(folder / f"run{nproc}"),
            "threads": 1,
        }
        path = folder / f"config{nproc}.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        command = [sys.executable, "-m", "recstack.cli", "train", str(path)] + (["--nproc", "2"] if nproc > 1 else [])
        subprocess.run(command, check=True, capture_output=True)
        metrics = json.loads((folder / f"run{nproc}" / "metrics.json").read_text())
        results[nproc] = {
            "samples_per_second": metrics["samples_per_second"],
            "train_seconds": metrics["train_seconds"],
            "command_seconds": round(time.perf_counter() - started, 1),
            "valid_auc": round(metrics["valid"]["auc"], 4),
        }
        print(nproc, results[nproc], flush=True)
    print(json.dumps({"rows": args.rows, "epochs": args.epochs, "batch_per_process": args.batch_size, **{f"nproc_{k}": v for k, v in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
