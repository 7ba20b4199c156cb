"""Full-corpus retrieval metrics: hand-computed ranks, exclusions, ties, chunking."""

import math

import numpy as np
import pytest
import torch

from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores, evaluate_retrieval

SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],  # user 0
        [0.1, 0.5, 0.4, 0.3, 0.2],  # user 1
    ]
)  # (U=2, N=5)


def as_vectors(scores):
    """User vectors = score rows and identity item vectors, so ``users @ items.T == scores``."""
    return scores.clone(), torch.eye(scores.shape[1])


def naive_ranks(scores, indptr, indices, exclude_indptr, exclude_indices):
    """Reference ranks, one (user, target) at a time (loops live only in the test)."""
    ranks = []
    for user in range(len(indptr) - 1):
        excluded = set(exclude_indices[exclude_indptr[user] : exclude_indptr[user + 1]].tolist())
        for target in indices[indptr[user] : indptr[user + 1]]:
            others = [
                item
                for item in range(scores.shape[1])
                if item != target and item not in excluded and scores[user, item] >= scores[user, target]
            ]
            ranks.append(1 + len(others))
    return np.array(ranks)


def naive_metrics(ranks, indptr, ks):
    per_user = {f"{name}@{k}": [] for k in ks for name in ("recall", "hitrate", "ndcg")}
    per_user["mrr"] = []
    for user in range(len(indptr) - 1):
        user_ranks = ranks[indptr[user] : indptr[user + 1]]
        if len(user_ranks) == 0:
            continue
        for k in ks:
            hits = user_ranks[user_ranks <= k]
            ideal = sum(1 / math.log2(i + 2) for i in range(min(len(user_ranks), k)))
            per_user[f"recall@{k}"].append(len(hits) / len(user_ranks))
            per_user[f"hitrate@{k}"].append(float(len(hits) > 0))
            per_user[f"ndcg@{k}"].append(sum(1 / math.log2(r + 1) for r in hits) / ideal)
        per_user["mrr"].append(1 / user_ranks.min())
    return {name: float(np.mean(values)) for name, values in per_user.items()}


def test_hand_computed_ranks_with_exclusions_and_a_seen_target():
    # user 0: target 3; items 0 and 1 excluded, so only item 2 is above it: rank 2 (not 4).
    # user 1: target 4 was also seen in training but stays ranked; item 1 excluded;
    #         items 2 and 3 are above it: rank 3 (not 4).
    exclude = (np.array([0, 2, 4]), np.array([0, 1, 4, 1]))
    users, items = as_vectors(SCORES)
    metrics = evaluate_retrieval(users, items, [3, 4], exclude=exclude, ks=(1, 2, 3))
    assert metrics["users"] == 2
    assert metrics["hitrate@1"] == 0.0
    assert metrics["hitrate@2"] == pytest.approx(0.5)
    assert metrics["hitrate@3"] == pytest.approx(1.0)
    for k in (1, 2, 3):
        assert metrics[f"recall@{k}"] == metrics[f"hitrate@{k}"]  # one target each
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_without_exclusions_the_ranks_are_plain_positions():
    users, items = as_vectors(SCORES)
    metrics = evaluate_retrieval(users, items, [3, 4], ks=(4,))
    assert metrics["mrr"] == pytest.approx((1 / 4 + 1 / 4) / 2)  # both targets 4th of 5


def test_several_targets_per_user_recall_is_hits_over_targets():
    # user 0 holds targets {2, 3} with item 0 excluded: ranks 2 and 3; user 1 has no target.
    metrics = evaluate_ranked_scores(
        lambda rows: SCORES[rows].clone(),
        target_indptr=np.array([0, 2, 2]),
        target_indices=np.array([2, 3]),
        exclude=(np.array([0, 1, 1]), np.array([0])),
        ks=(2, 3),
    )
    ideal = 1 + 1 / math.log2(3)
    assert metrics["users"] == 1  # users without a target are not averaged in
    assert metrics["recall@2"] == pytest.approx(0.5) and metrics["hitrate@2"] == 1.0
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal)
    assert metrics["mrr"] == pytest.approx(0.5)


def test_ties_count_against_the_target():
    # A collapsed model scoring everything equal must not get rank 1.
    metrics = evaluate_ranked_scores(lambda rows: np.zeros((len(rows), 10)), [0, 5, 9], ks=(1, 9))
    assert metrics["hitrate@1"] == 0.0
    assert metrics["mrr"] == pytest.approx(1 / 10)


def test_nan_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranked_scores(lambda rows: np.full((len(rows), 4), np.nan), [0, 1])


def random_case(seed, num_users=37, num_items=50, multi=False):
    rng = np.random.default_rng(seed)
    user_vectors = torch.from_numpy(rng.standard_normal((num_users, 8)).astype(np.float32))
    item_vectors = torch.from_numpy(rng.standard_normal((num_items, 8)).astype(np.float32))
    exclude_counts = rng.integers(0, 10, size=num_users)
    exclude_indptr = np.concatenate([[0], np.cumsum(exclude_counts)])
    exclude_indices = np.concatenate(
        [rng.choice(num_items, size=c, replace=False) for c in exclude_counts]
    )
    target_counts = rng.integers(0, 4, size=num_users) if multi else np.ones(num_users, np.int64)
    target_indptr = np.concatenate([[0], np.cumsum(target_counts)])
    target_indices = np.concatenate(
        [rng.choice(num_items, size=c, replace=False) for c in target_counts]
    )
    return user_vectors, item_vectors, target_indptr, target_indices, exclude_indptr, exclude_indices


@pytest.mark.parametrize("multi", [False, True])
def test_matches_a_naive_reference_on_random_data(multi):
    users, items, t_ptr, t_idx, e_ptr, e_idx = random_case(seed=3, multi=multi)
    ks = (1, 5, 10)
    metrics = evaluate_retrieval(
        users, items, target_indptr=t_ptr, target_indices=t_idx, exclude=(e_ptr, e_idx), ks=ks
    )
    ranks = naive_ranks((users @ items.T).numpy(), t_ptr, t_idx, e_ptr, e_idx)
    expected = naive_metrics(ranks, t_ptr, ks)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("multi", [False, True])
def test_chunking_does_not_change_the_result(multi):
    users, items, t_ptr, t_idx, e_ptr, e_idx = random_case(seed=4, multi=multi)
    results = [
        evaluate_retrieval(
            users,
            items,
            target_indptr=t_ptr,
            target_indices=t_idx,
            exclude=(e_ptr, e_idx),
            ks=(5, 20),
            batch_size=batch_size,
        )
        for batch_size in (1, 4, 10, 1024)
    ]
    for result in results[1:]:
        assert result == results[0]


def test_single_targets_equal_the_same_targets_as_csr():
    users, items, _, targets, e_ptr, e_idx = random_case(seed=5)
    as_list = evaluate_retrieval(users, items, targets.tolist(), exclude=(e_ptr, e_idx))
    as_csr = evaluate_retrieval(
        users,
        items,
        target_indptr=np.arange(len(targets) + 1),
        target_indices=targets,
        exclude=(e_ptr, e_idx),
    )
    assert as_list == as_csr


def test_a_numpy_score_fn_agrees_with_dot_product_retrieval():
    users, items, _, targets, e_ptr, e_idx = random_case(seed=6)
    scores = (users @ items.T).numpy()  # (U, N)
    from_vectors = evaluate_retrieval(users, items, targets, exclude=(e_ptr, e_idx), batch_size=8)
    from_fn = evaluate_ranked_scores(
        lambda rows: scores[rows].copy(), targets, exclude=(e_ptr, e_idx), batch_size=8
    )
    assert from_fn == from_vectors


def test_inputs_are_validated():
    users, items = as_vectors(SCORES)
    with pytest.raises(ValueError, match="not both"):
        evaluate_retrieval(users, items, [0, 1], target_indptr=[0, 1, 2], target_indices=[0, 1])
    with pytest.raises(ValueError, match="one row per user"):
        evaluate_retrieval(users, items, [0, 1, 2])
    with pytest.raises(ValueError, match="exclude"):
        evaluate_retrieval(users, items, [0, 1], exclude=(np.array([0, 1]), np.array([0])))
    with pytest.raises(ValueError, match="target item rows"):
        evaluate_retrieval(users, items, [0, 7])
