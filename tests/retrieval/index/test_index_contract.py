"""The VectorIndex contract, checked on every backend (exact, faiss flat/HNSW/IVF, Milvus Lite).

Ground truth is a NumPy brute force; exact backends must reproduce it, approximate ones must
reach recall@10 >= 0.95 on 2,000 clustered vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from recstack.retrieval.index import load_index

from .conftest import fill, recall

K = 10


def brute_force(ids, vectors, queries, k, exclude=None):
    """NumPy reference: scores ``(Q, k)``, ids ``(Q, k)``."""
    scores = queries @ vectors.T  # (Q, N)
    if exclude is not None:
        for q, row in enumerate(exclude):
            scores[q, np.isin(ids, row)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def assert_scores_belong_to_ids(scores, found, ids, vectors, queries):
    """Each returned score is the inner product with the vector stored under the returned id,
    so ids are never shifted or swapped (the IndexIDMap-over-IVF remove bug)."""
    row_of = {int(i): r for r, i in enumerate(ids)}
    for q in range(found.shape[0]):
        for score, item in zip(scores[q], found[q]):
            if item != -1:
                assert score == pytest.approx(float(queries[q] @ vectors[row_of[int(item)]]), abs=1e-4)


def test_returns_the_exact_top_k(backend, data):
    name, index, exact = backend
    ids, vectors, queries = data
    fill(index, ids, vectors)
    assert len(index) == len(ids) and index.dim == vectors.shape[1]
    true_scores, true_ids = brute_force(ids, vectors, queries, K)

    scores, found = index.search(queries, K)

    assert scores.shape == found.shape == (len(queries), K)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "rows are sorted by descending score"
    if exact:
        np.testing.assert_array_equal(found, true_ids)
        np.testing.assert_allclose(scores, true_scores, atol=1e-5)
    else:
        assert recall(found, true_ids) >= 0.95, name
    assert_scores_belong_to_ids(scores, found, ids, vectors, queries)


def test_excluded_ids_are_never_returned(backend, data):
    name, index, exact = backend
    ids, vectors, queries = data
    fill(index, ids, vectors)
    _, true_ids = brute_force(ids, vectors, queries, K)
    # drop each query's 3 best and a varying number of others: ragged lists, some empty
    exclude = [np.concatenate([true_ids[q, :3], ids[: q % 5]]) if q % 7 else np.array([], np.int64)
               for q in range(len(queries))]

    scores, found = index.search(queries, K, exclude=exclude)

    for q, row in enumerate(exclude):
        assert not np.isin(found[q], row).any()
    assert (found != -1).all(), "over-fetching still fills all k slots"
    expected_scores, expected_ids = brute_force(ids, vectors, queries, K, exclude=exclude)
    if exact:
        np.testing.assert_array_equal(found, expected_ids)
    else:
        assert recall(found, expected_ids) >= 0.95, name


def test_upsert_replaces_existing_ids_and_adds_new_ones(backend, data):
    _, index, _ = backend
    ids, vectors, queries = data
    fill(index, ids, vectors)
    moved = ids[[5, 6]]  # give two items the first two queries' own directions
    index.upsert(np.concatenate([moved, [7]]), np.concatenate([queries[:2], vectors[:1]]))

    assert len(index) == len(ids) + 1
    scores, found = index.search(queries[:2], 1)
    assert found[:, 0].tolist() == moved.tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="already indexed"):
        index.add(moved, queries[:2])


def test_delete_removes_ids(backend, data):
    _, index, exact = backend
    ids, vectors, queries = data
    fill(index, ids, vectors)
    _, true_ids = brute_force(ids, vectors, queries, K)
    doomed = np.unique(true_ids[:, :2])

    index.delete(np.concatenate([doomed, [999_999]]))  # an absent id is ignored

    assert len(index) == len(ids) - len(doomed)
    scores, found = index.search(queries, K)
    assert not np.isin(found, doomed).any()
    keep = ~np.isin(ids, doomed)
    _, expected = brute_force(ids[keep], vectors[keep], queries, K)
    assert recall(found, expected) >= (1.0 if exact else 0.95)
    assert_scores_belong_to_ids(scores, found, ids, vectors, queries)


def test_save_then_load_gives_the_same_results(backend, data, tmp_path):
    _, index, _ = backend
    ids, vectors, queries = data
    fill(index, ids, vectors)
    index.delete(ids[:10])  # saved state includes deletions
    before = index.search(queries, K, exclude=[ids[10:12]] * len(queries))

    index.save(tmp_path / "saved")
    index.close()  # Milvus Lite: stop its server, as a new process would find it
    with load_index(tmp_path / "saved") as reloaded:
        after = reloaded.search(queries, K, exclude=[ids[10:12]] * len(queries))
        assert len(reloaded) == len(ids) - 10 and type(reloaded) is type(index)

    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)


def test_pads_when_k_exceeds_the_number_of_vectors(backend, data):
    _, index, _ = backend
    ids, vectors, queries = data
    index.add(ids[:5], vectors[:5])  # IVF trains a single list on 5 vectors: exact

    scores, found = index.search(queries[:3], 8, exclude=[ids[:1], [], []])

    assert found.shape == (3, 8)
    assert sorted(found[0, :4]) == sorted(ids[1:5]) and (found[0, 4:] == -1).all()
    assert sorted(found[1, :5]) == sorted(ids[:5]) and (found[1, 5:] == -1).all()
    assert np.isneginf(scores[found == -1]).all() and np.isfinite(scores[found != -1]).all()


def test_empty_index_returns_only_padding(backend, data):
    _, index, _ = backend
    scores, found = index.search(data[2][:2], 3)
    assert (found == -1).all() and np.isneginf(scores).all()
    assert len(index) == 0
