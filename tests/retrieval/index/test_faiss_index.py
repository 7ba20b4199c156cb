"""faiss specifics: IVF training rules, HNSW deletes by rebuild, search knobs that persist."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from recstack.retrieval.index import FaissIndex, load_index

from .conftest import DIM


def test_ivf_sizes_nlist_from_the_first_add(data):
    ids, vectors, _ = data
    index = FaissIndex(dim=DIM, kind="ivf")
    index.add(ids, vectors)
    assert index.nlist == len(ids) // 39  # 4 * sqrt(N) capped at 39 training points per list


def test_ivf_with_too_few_training_vectors_says_what_to_do(data):
    ids, vectors, _ = data
    index = FaissIndex(dim=DIM, kind="ivf", nlist=100)
    with pytest.raises(ValueError, match="needs at least 3900 vectors"):
        index.add(ids, vectors)


def test_hnsw_delete_rebuilds_and_keeps_settings(data):
    ids, vectors, queries = data
    index = FaissIndex(dim=DIM, kind="hnsw", hnsw_m=8, ef_search=40)
    index.add(ids[:300], vectors[:300])
    index.ef_search = 90
    index.delete(ids[:100])
    assert len(index) == 200
    assert index._faiss.downcast_index(index._index.index).hnsw.efSearch == 90
    _, found = index.search(queries, 5)
    assert not np.isin(found, ids[:100]).any()


def test_search_knobs_survive_save_and_load(data, tmp_path):
    ids, vectors, _ = data
    index = FaissIndex(dim=DIM, kind="ivf", nprobe=3)
    index.add(ids, vectors)
    index.nprobe = 7
    index.save(tmp_path / "ivf")
    reloaded = load_index(tmp_path / "ivf")
    assert reloaded.nprobe == reloaded._index.nprobe == 7
    assert reloaded.nlist == index.nlist


def test_untrained_ivf_saves_and_loads_empty(tmp_path):
    FaissIndex(dim=DIM, kind="ivf").save(tmp_path / "empty")
    reloaded = load_index(tmp_path / "empty")
    assert len(reloaded) == 0 and (reloaded.search(np.ones((1, DIM), np.float32), 2)[1] == -1).all()


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"recstack\[vectors\]"):
        FaissIndex(dim=DIM)
