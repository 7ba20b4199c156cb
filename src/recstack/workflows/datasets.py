"""Builds a bundled dataset named in a config when its files are not there yet."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

from recstack.atomic import atomic_path
from recstack.config import DataConfig


def ensure_dataset(data: DataConfig) -> None:
    """Writes the files of ``data.dataset`` into ``data.dataset_dir`` unless they exist."""
    if data.dataset is None or data.dataset_dir is None:
        return
    folder = Path(data.dataset_dir)
    needed = [Path(p) for source in (data.train, data.valid, data.test, data.catalog, data.seen) if source for p in source.paths]
    if all(p.exists() for p in needed):
        return
    print(f"building dataset {data.dataset} in {folder} ...", file=sys.stderr)
    from recstack import datasets

    if data.dataset == "movielens_ctr":
        datasets.build_ctr(folder)
    elif data.dataset == "movielens_retrieval":
        datasets.build_retrieval(folder)
    elif data.dataset == "movielens_sequences":
        datasets.build_sequences(folder)
    elif data.dataset == "synthetic_sequences":
        datasets.generate_sequences(folder, num_users=1000, num_items=500, length=20, seed=0)
    elif data.dataset == "synthetic_ctr":
        write_synthetic_ctr_splits(folder, rows=(40_000, 10_000, 10_000), seed=0)
    elif data.dataset == "movielens_multitask":
        datasets.build_multitask(folder)
    elif data.dataset == "synthetic_multitask":
        datasets.generate_multitask(folder)
    elif data.dataset == "synthetic_retrieval":
        datasets.generate_retrieval(folder, num_users=1000, num_items=2000, interactions_per_user=20, seed=0)


def write_synthetic_ctr_splits(folder: Path, *, rows: tuple[int, int, int], seed: int = 0) -> dict:
    """train/valid/test Parquet files drawn from ONE planted model (one seed), split by row."""
    from recstack.datasets import generate_ctr

    folder.mkdir(parents=True, exist_ok=True)
    full = folder / "all.parquet"
    info = generate_ctr(full, rows=sum(rows), seed=seed)
    table = pq.read_table(full)
    start = 0
    for split, count in zip(("train", "valid", "test"), rows):
        with atomic_path(folder / f"{split}.parquet") as tmp:
            pq.write_table(table.slice(start, count), tmp)
        start += count
    full.unlink()
    return info
