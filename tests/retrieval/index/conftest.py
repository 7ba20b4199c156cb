"""Shared data and one factory per backend, so every backend is held to the same contract."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from recstack.retrieval.index import ExactIndex, FaissIndex, MilvusIndex, VectorIndex

DIM = 32

# name -> (factory(tmp_path, **options), exact?) ; exact backends must match ExactIndex result for result
BACKENDS: dict[str, tuple[Callable[[Path], VectorIndex], bool]] = {
    "exact": (lambda tmp, **kw: ExactIndex(dim=DIM, **kw), True),
    "faiss-flat": (lambda tmp, **kw: FaissIndex(dim=DIM, kind="flat", **kw), True),
    "faiss-hnsw": (lambda tmp, **kw: FaissIndex(dim=DIM, kind="hnsw", hnsw_m=16, ef_construction=100, ef_search=64, **kw), False),
    "faiss-ivf": (lambda tmp, **kw: FaissIndex(dim=DIM, kind="ivf", nprobe=8, **kw), False),
    "milvus-flat": (
        lambda tmp, **kw: MilvusIndex(dim=DIM, uri=str(tmp / "flat.db"), collection="items", index_type="FLAT", **kw),
        True,
    ),
    "milvus-hnsw": (
        lambda tmp, **kw: MilvusIndex(
            dim=DIM, uri=str(tmp / "hnsw.db"), collection="items", hnsw_m=16, ef_construction=100, ef_search=64, **kw
        ),
        False,
    ),
}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Two shared cores in CI: keep torch and faiss from oversubscribing them."""
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, n_clusters: int, seed: int) -> np.ndarray:
    """``(n, dim)`` unit vectors around ``n_clusters`` random unit centres."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_clusters, dim)))
    members = centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return normalise(members)


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids ``(2000,)`` (sparse, not 0..N-1), vectors ``(2000, D)``, queries ``(50, D)``."""
    vectors = clustered(2_050, DIM, n_clusters=20, seed=0)
    ids = np.arange(2_000, dtype=np.int64) * 3 + 1000
    return ids, vectors[:2_000], vectors[2_000:]


@pytest.fixture(params=list(BACKENDS))
def backend(request, tmp_path) -> tuple[str, VectorIndex, bool]:
    """(name, empty index, is-exact); Milvus Lite indexes are closed afterwards."""
    make, exact = BACKENDS[request.param]
    index = make(tmp_path)
    yield request.param, index, exact
    index.close()


def fill(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    index.add(ids, vectors)
    if isinstance(index, MilvusIndex):
        index.flush()  # Lite builds the ANN index per flushed segment


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` ids that ``found`` contains. Both ``(Q, K)``."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found != -1)
    return float(hits.sum() / (truth != -1).sum())
