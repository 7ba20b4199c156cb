"""Popularity, ItemKNN, EASE and ALS recover planted structure and plug into the evaluator."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp

from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.retrieval.baselines import ALS, EASE, ItemKNN, Popularity

NUM_BLOCKS, USERS_PER_BLOCK, ITEMS_PER_BLOCK = 3, 12, 6


def block_interactions(seed=0, users_per_block=USERS_PER_BLOCK):
    """Users of block b interact only with items of block b: ``(3 * users_per_block, 18)`` 0/1 CSR.

    Each in-block item is seen independently with probability 0.5, redrawn until a user has
    2 to 4 items, so every user has unseen in-block items.
    """
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for block in range(NUM_BLOCKS):
        for user in range(users_per_block):
            seen = np.zeros(0, np.int64)
            while not 2 <= len(seen) <= 4:
                seen = np.flatnonzero(rng.random(ITEMS_PER_BLOCK) < 0.5)
            rows += [block * users_per_block + user] * len(seen)
            cols += (block * ITEMS_PER_BLOCK + seen).tolist()
    shape = (NUM_BLOCKS * users_per_block, NUM_BLOCKS * ITEMS_PER_BLOCK)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def assert_unseen_in_block_items_outscore_other_blocks(model, interactions):
    users = np.arange(interactions.shape[0])
    scores = model.score(users)  # (U, N)
    assert scores.shape == interactions.shape and scores.dtype == np.float32
    user_block = users // USERS_PER_BLOCK
    item_block = np.arange(interactions.shape[1]) // ITEMS_PER_BLOCK
    in_block = user_block[:, None] == item_block[None, :]  # (U, N)
    unseen_in_block = in_block & (interactions.toarray() == 0)
    lowest_in_block = np.where(unseen_in_block, scores, np.inf).min(axis=1)  # (U,)
    highest_elsewhere = np.where(in_block, -np.inf, scores).max(axis=1)  # (U,)
    assert (lowest_in_block > highest_elsewhere).all()


def test_ease_recovers_the_block_structure():
    interactions = block_interactions()
    # l2 well above the Gram matrix's scale, as in practice: with l2 ~ 1 on 36 users EASE fits
    # sampling noise (negative in-block weights) instead of the blocks.
    model = EASE(l2=100.0).fit(interactions)
    assert np.allclose(np.diag(model.weights), 0.0)  # the diag(B) = 0 constraint
    assert_unseen_in_block_items_outscore_other_blocks(model, interactions)


def test_ease_weights_follow_the_closed_form():
    interactions = block_interactions(seed=1)
    l2 = 5.0
    gram = (interactions.T @ interactions).toarray().astype(np.float64)
    precision = np.linalg.inv(gram + l2 * np.eye(len(gram)))
    expected = np.eye(len(gram)) - precision @ np.diag(1.0 / np.diag(precision))
    np.testing.assert_allclose(EASE(l2=l2).fit(interactions).weights, expected, atol=1e-5)


def test_item_knn_recovers_the_block_structure():
    interactions = block_interactions()
    model = ItemKNN(k=ITEMS_PER_BLOCK - 1, shrink=1.0).fit(interactions)
    assert model.weights.diagonal().sum() == 0.0  # no self-similarity
    assert_unseen_in_block_items_outscore_other_blocks(model, interactions)


def test_item_knn_keeps_k_neighbours_per_item_and_shrinks_cosine():
    interactions = block_interactions()
    assert ItemKNN(k=2).fit(interactions).weights.getnnz(axis=0).max() == 2
    columns = interactions.toarray().T  # (N, U)
    cosine = columns[0] @ columns[1] / (np.linalg.norm(columns[0]) * np.linalg.norm(columns[1]))
    weights = ItemKNN(k=100).fit(interactions).weights
    assert weights[0, 1] == pytest.approx(cosine, rel=1e-6)
    shrunk = ItemKNN(k=100, shrink=10.0).fit(interactions).weights
    assert shrunk[0, 1] < weights[0, 1]


def test_popularity_ranks_items_by_count_for_every_user():
    interactions = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 0, 0, 1], [1, 1, 0, 0]], dtype=np.float32)
    )
    scores = Popularity().fit(interactions).score(np.array([0, 2]))
    np.testing.assert_array_equal(scores, [[3, 2, 0, 1], [3, 2, 0, 1]])


def test_held_out_items_are_found_through_the_evaluator():
    rng = np.random.default_rng(0)
    interactions = block_interactions(seed=0, users_per_block=40).tolil()
    held_out = np.array([rng.choice(row) for row in interactions.rows])  # one item per user
    interactions[np.arange(len(held_out)), held_out] = 0
    train = interactions.tocsr()
    train.eliminate_zeros()

    def hitrate(model):
        metrics = evaluate_ranked_scores(
            model.fit(train).score,
            held_out,
            exclude=(train.indptr, train.indices),
            ks=(ITEMS_PER_BLOCK,),
            batch_size=7,
        )
        return metrics[f"hitrate@{ITEMS_PER_BLOCK}"]

    # A held-out item is one of at most 5 unseen in-block items, so a model that has learnt the
    # blocks hits it within 6; only a pair that never co-occurs in training can be missed.
    popularity = hitrate(Popularity())
    for model in (EASE(l2=100.0), ItemKNN(k=10)):
        assert hitrate(model) >= 0.95, type(model).__name__
        assert hitrate(model) > popularity + 0.3, type(model).__name__


def test_score_needs_fit_and_fit_needs_a_sparse_matrix():
    with pytest.raises(RuntimeError, match="before fit"):
        EASE().score(np.array([0]))
    with pytest.raises(TypeError, match="scipy.sparse"):
        Popularity().fit(np.ones((2, 2)))


def test_als_without_implicit_explains_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)  # import implicit -> ImportError
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)
    with pytest.raises(ImportError, match="pip install implicit"):
        ALS()


def test_als_scores_every_item_when_implicit_is_installed():
    pytest.importorskip("implicit")
    interactions = block_interactions()
    model = ALS(factors=NUM_BLOCKS, iterations=20, regularization=0.01, random_state=0)
    scores = model.fit(interactions).score(np.arange(interactions.shape[0]))
    assert scores.shape == interactions.shape and np.isfinite(scores).all()
