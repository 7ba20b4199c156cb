from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService

from .tiny_runs import train_tiny_runs

torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained runs (two-tower retriever, DIN ranker) and their tiny data, built once."""
    root = tmp_path_factory.mktemp("serving")
    dssm, din = train_tiny_runs(root)
    data = root / "data"
    return {
        "root": root,
        "retrieval": dssm,
        "ranker": din,
        "catalog": data / "items.parquet",
        "users": data / "users.parquet",
        "history": data / "retrieval_train.parquet",
    }


@pytest.fixture(scope="session")
def service(tiny_runs: dict[str, Path]) -> RecommendationService:
    catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=tiny_runs["users"], history=tiny_runs["history"])
    return RecommendationService(retrieval_run=tiny_runs["retrieval"], ranking_run=tiny_runs["ranker"], catalogue=catalogue, backend="exact")
