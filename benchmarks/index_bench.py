"""Recall@k against exact search, and queries per second, for each vector index backend.

Two synthetic data sets of L2-normalised vectors (inner product = cosine):
  clustered: points around sqrt(N) random centres, queries drawn the same way (like item
             embeddings, where ANN indexes do well);
  uniform:   uniform on the unit sphere (the hard case: no structure to exploit).

Build time is add() (plus flush() for Milvus Lite, which builds its index then). QPS is one
search() call over all queries after a warm-up call. Threads are set explicitly for torch
(exact) and faiss (also used in-process by Milvus Lite).

    python benchmarks/index_bench.py --n 100000 --threads 2
    python benchmarks/index_bench.py --backends faiss-hnsw,faiss-ivf --nprobe 64
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import torch

from recstack.retrieval.index import ExactIndex, FaissIndex, MilvusIndex, VectorIndex

Factory = Callable[[argparse.Namespace, Path], VectorIndex]

BACKENDS: dict[str, Factory] = {
    "exact": lambda args, tmp: ExactIndex(dim=args.dim),
    "faiss-flat": lambda args, tmp: FaissIndex(dim=args.dim, kind="flat"),
    "faiss-hnsw": lambda args, tmp: FaissIndex(
        dim=args.dim, kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    ),
    "faiss-ivf": lambda args, tmp: FaissIndex(dim=args.dim, kind="ivf", nprobe=args.nprobe),
    "milvus-hnsw": lambda args, tmp: MilvusIndex(
        dim=args.dim, uri=str(tmp / "bench.db"), collection=f"bench_{time.monotonic_ns()}",
        index_type="HNSW", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    ),
}


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(kind: str, n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """vectors ``(N, D)`` and queries ``(Q, D)``, unit length."""
    rng = np.random.default_rng(seed)
    total = n + n_queries
    if kind == "uniform":
        points = normalise(rng.standard_normal((total, dim), dtype=np.float32))
    else:
        centres = normalise(rng.standard_normal((max(16, int(np.sqrt(n))), dim), dtype=np.float32))
        noise = rng.standard_normal((total, dim), dtype=np.float32) * (0.5 / np.sqrt(dim))
        points = normalise(centres[rng.integers(0, len(centres), total)] + noise)
    return points[:n], points[n:]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / k over queries; both ``(Q, K)``, -1 = padding."""
    hits = 0
    for start in range(0, len(found), 256):  # (256, K, K) comparisons at a time
        f, t = found[start : start + 256], truth[start : start + 256]
        hits += int(((f[:, :, None] == t[:, None, :]) & (f[:, :, None] != -1)).any(axis=2).sum())
    return hits / truth.size


def run_backend(
    name: str, args: argparse.Namespace, tmp: Path, ids: np.ndarray, vectors: np.ndarray,
    queries: np.ndarray, truth: np.ndarray | None,
) -> tuple[dict[str, float], np.ndarray]:
    index = BACKENDS[name](args, tmp)
    try:
        start = time.perf_counter()
        index.add(ids, vectors)
        if isinstance(index, MilvusIndex):
            index.flush()
        build_s = time.perf_counter() - start
        index.search(queries[: min(10, len(queries))], args.k)  # warm-up
        start = time.perf_counter()
        _, found = index.search(queries, args.k)
        search_s = time.perf_counter() - start
    finally:
        index.close()
    recall = 1.0 if truth is None else recall_at_k(found, truth)
    return {"build_s": build_s, "qps": len(queries) / search_s, "recall": recall}, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and faiss threads")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {list(BACKENDS)}")
    parser.add_argument("--datasets", default="clustered,uniform")
    parser.add_argument("--k", type=int, default=100, help="recall@k and search k")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--item-vectors", type=Path, help="dataset 'files': (N, D) .npy, e.g. from recstack embed-items")
    parser.add_argument("--query-vectors", type=Path, help="dataset 'files': (Q, D) .npy, e.g. from recstack embed-users")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {list(BACKENDS)}")

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(
        f"n={args.n:,} dim={args.dim} queries={args.queries:,} k={args.k} threads={args.threads} "
        f"hnsw(M={args.hnsw_m}, efC={args.ef_construction}, ef={args.ef_search}) ivf(nprobe={args.nprobe}) "
        f"torch {torch.__version__} faiss {faiss.__version__}"
    )
    print(f"{'dataset':<10} {'backend':<12} {'build_s':>9} {'queries/s':>11} {f'recall@{args.k}':>11}")
    for dataset in args.datasets.split(","):
        if dataset == "files":  # a real catalogue: item vectors indexed, user vectors as queries
            vectors = np.ascontiguousarray(np.load(args.item_vectors), dtype=np.float32)
            queries = np.ascontiguousarray(np.load(args.query_vectors), dtype=np.float32)
            args.n, args.dim = vectors.shape
            args.k = min(args.k, len(vectors))
            print(f"# files: {len(vectors):,} item vectors (dim {args.dim}), {len(queries):,} queries; --n/--dim/--queries unused")
        else:
            vectors, queries = make_data(dataset, args.n, args.queries, args.dim, args.seed)
        ids = np.arange(len(vectors), dtype=np.int64)
        tmp = Path(tempfile.mkdtemp(prefix="index_bench_"))
        try:
            # exact search is the ground truth, so it always runs first (and is reported if asked)
            exact_stats, truth = run_backend("exact", args, tmp, ids, vectors, queries, truth=None)
            for name in backends:
                stats = exact_stats if name == "exact" else run_backend(name, args, tmp, ids, vectors, queries, truth)[0]
                print(
                    f"{dataset:<10} {name:<12} {stats['build_s']:>9.2f} {stats['qps']:>11,.0f} "
                    f"{stats['recall']:>11.3f}",
                    flush=True,
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
