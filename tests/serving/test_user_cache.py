"""The stored-user cache: same answers as without it, only for requests that override nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest, RecommendResponse
from recstack.serving.user_cache import UserCache, UserState


def _service(tiny_runs: dict[str, Path], cache: int) -> RecommendationService:
    catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=tiny_runs["users"], history=tiny_runs["history"])
    return RecommendationService(retrieval_run=tiny_runs["retrieval"], ranking_run=tiny_runs["ranker"], catalogue=catalogue, backend="exact", user_cache_size=cache)


@pytest.fixture(scope="module")
def cached(tiny_runs: dict[str, Path]) -> RecommendationService:
    return _service(tiny_runs, cache=1000)


@pytest.fixture(scope="module")
def uncached(tiny_runs: dict[str, Path]) -> RecommendationService:
    return _service(tiny_runs, cache=0)


def _same(a: RecommendResponse, b: RecommendResponse) -> None:
    assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
    np.testing.assert_allclose([i.recall_score for i in a.items], [i.recall_score for i in b.items], rtol=0, atol=1e-6)
    np.testing.assert_allclose([i.rank_score for i in a.items], [i.rank_score for i in b.items], rtol=0, atol=1e-6)


def test_cached_answers_equal_uncached_ones_in_mixed_batches(cached: RecommendationService, uncached: RecommendationService) -> None:
    users = [1, 2, 3, 4, 5, 6]
    first = [RecommendRequest(user_id=u, k=5) for u in users[:3]]
    cached.recommend(first)  # users 1-3 are now cached; 4-6 are not
    assert cached.models.user_cache.stats()["users"] == 3
    mixed = [RecommendRequest(user_id=u, k=5) for u in reversed(users)]
    hits_before = cached.models.user_cache.hits
    for a, b in zip(cached.recommend(mixed), uncached.recommend(mixed)):
        _same(a, b)
    assert cached.models.user_cache.hits - hits_before == 3  # users 3, 2, 1
    assert cached.models.user_cache.stats()["users"] == 6


def test_requests_that_override_features_or_history_bypass_the_cache(cached: RecommendationService, uncached: RecommendationService) -> None:
    cached.recommend([RecommendRequest(user_id=7, k=5)])
    overrides = [
        RecommendRequest(user_id=7, k=5, history=[3, 4, 5]),
        RecommendRequest(user_id=7, k=5, features={"age": 61}),
    ]
    size = len(cached.models.user_cache)
    for request in overrides:
        [a], [b] = cached.recommend([request]), uncached.recommend([request])
        _same(a, b)
    assert len(cached.models.user_cache) == size  # nothing stored for an overriding request
    [plain] = cached.recommend([RecommendRequest(user_id=7, k=5)])
    [reference] = uncached.recommend([RecommendRequest(user_id=7, k=5)])
    _same(plain, reference)  # the override did not leak into user 7's cached state


def test_a_swap_starts_an_empty_cache(tiny_runs: dict[str, Path]) -> None:
    service = _service(tiny_runs, cache=100)
    service.recommend([RecommendRequest(user_id=1, k=5)])
    assert len(service.models.user_cache) == 1
    service.swap(tiny_runs["retrieval"], tiny_runs["ranker"])
    assert len(service.models.user_cache) == 0


def test_lru_keeps_the_most_recently_used_users() -> None:
    from recstack.data.batch import Batch

    cache = UserCache(max_users=2)
    state = UserState(vector=np.zeros(2, np.float32), ranker_row=Batch())
    cache.put(1, state)
    cache.put(2, state)
    assert cache.get(1) is state  # 1 is now the most recent
    cache.put(3, state)  # evicts 2
    assert cache.get(2) is None and cache.get(1) is state and cache.get(3) is state
    assert cache.stats() == {"users": 2, "max_users": 2, "hits": 3, "misses": 1}


def test_zero_size_keeps_nothing_and_a_negative_size_is_refused() -> None:
    from recstack.data.batch import Batch

    cache = UserCache(max_users=0)
    cache.put(1, UserState(vector=np.zeros(2, np.float32), ranker_row=Batch()))
    assert len(cache) == 0 and cache.get(1) is None
    with pytest.raises(ValueError, match="max_users"):
        UserCache(max_users=-1)
