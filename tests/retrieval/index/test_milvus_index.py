"""Milvus specifics, on Milvus Lite: persistence across restarts and the pymilvus pitfalls."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.retrieval.index import MilvusIndex

from .conftest import DIM, recall


def open_index(tmp_path, **options) -> MilvusIndex:
    return MilvusIndex(dim=DIM, uri=str(tmp_path / "items.db"), collection="items", **options)


def test_lite_store_survives_a_restart(tmp_path, data):
    ids, vectors, queries = data
    index = open_index(tmp_path)
    index.add(ids[:500], vectors[:500])  # no explicit flush: close() must persist it
    index.upsert(ids[:1], queries[:1])
    index.delete(ids[1:3])
    before = index.search(queries, 10)
    index.close()

    with open_index(tmp_path) as reopened:  # a fresh server over the same folder
        assert len(reopened) == 498
        after = reopened.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)


def test_flush_hands_search_to_the_ann_index(tmp_path):
    """Unflushed rows are scanned exactly; after flush() a deliberately weak HNSW answers."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((2_000, DIM)).astype(np.float32)  # uniform: hard for ANN
    queries = rng.standard_normal((50, DIM)).astype(np.float32)
    ids = np.arange(2_000, dtype=np.int64)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    with open_index(tmp_path, hnsw_m=4, ef_construction=8, ef_search=1) as index:
        index.add(ids, vectors)
        exact_recall = recall(index.search(queries, 10)[1], truth)
        index.flush()
        ann_recall = recall(index.search(queries, 10)[1], truth)
    assert exact_recall == 1.0
    assert ann_recall < 0.9


def test_search_asks_only_for_ids(tmp_path, data):
    """With output_fields None or [] Milvus Lite ships every hit's vector back."""
    ids, vectors, queries = data
    with open_index(tmp_path) as index:
        index.add(ids[:50], vectors[:50])
        calls = []
        search = index._client.search
        index._client.search = lambda *args, **kwargs: calls.append(kwargs) or search(*args, **kwargs)
        index.search(queries[:2], 5)
    assert calls[0]["output_fields"] == ["id"]


def test_reopening_with_another_dim_or_index_type_is_refused(tmp_path):
    open_index(tmp_path).close()
    with pytest.raises(ValueError, match="dim"):
        MilvusIndex(dim=DIM + 1, uri=str(tmp_path / "items.db"), collection="items")
    with pytest.raises(ValueError, match="IVF_FLAT"):
        open_index(tmp_path, index_type="IVF_FLAT")
    open_index(tmp_path).close()  # the failed opens left nothing locked


def test_k_beyond_the_milvus_cap_is_refused(tmp_path, data):
    with open_index(tmp_path) as index, pytest.raises(ValueError, match="16384"):
        index.search(data[2][:1], 20_000)


def test_missing_pymilvus_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"recstack\[milvus\]"):
        open_index(tmp_path)
