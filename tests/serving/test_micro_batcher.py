"""Micro-batched calls answer each caller exactly as a call of its own; errors stay with their caller."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import pytest

from recstack.serving.micro_batcher import MicroBatcher
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest, RequestError


def test_concurrent_callers_get_their_own_responses(service: RecommendationService) -> None:
    calls: list[int] = []

    def recommend(requests: Sequence[RecommendRequest]):
        calls.append(len(requests))
        return service.recommend(requests)

    batcher = MicroBatcher(recommend, window_ms=20.0)
    requests = [RecommendRequest(user_id=u, k=4, candidates=20 + u) for u in range(1, 9)]
    answers: dict[int, list] = {}
    threads = [threading.Thread(target=lambda r=r: answers.__setitem__(r.user_id, batcher.submit([r]))) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) < len(requests)  # some callers shared a pass
    for request in requests:
        [alone] = service.recommend([request])
        [batched] = answers[request.user_id]
        assert [i.item_id for i in batched.items] == [i.item_id for i in alone.items]
        np.testing.assert_allclose([i.rank_score for i in batched.items], [i.rank_score for i in alone.items], atol=1e-6)


def test_a_bad_request_fails_only_its_caller(service: RecommendationService) -> None:
    batcher = MicroBatcher(service.recommend, window_ms=20.0)
    results: dict[str, object] = {}

    def call(name: str, request: RecommendRequest) -> None:
        try:
            results[name] = batcher.submit([request])
        except RequestError as error:
            results[name] = error

    good = threading.Thread(target=call, args=("good", RecommendRequest(user_id=1, k=3)))
    bad = threading.Thread(target=call, args=("bad", RecommendRequest(user_id=None, history=["not an id", object()], k=3)))
    for t in (good, bad):
        t.start()
    for t in (good, bad):
        t.join()
    assert isinstance(results["bad"], RequestError)
    assert len(results["good"][0].items) == 3  # type: ignore[index]


def test_rejects_a_negative_window() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda requests: [], window_ms=-1)


def test_a_caller_that_gives_up_does_not_stop_the_worker() -> None:
    import asyncio

    release = threading.Event()

    def recommend(requests: Sequence[RecommendRequest]):
        release.wait(5)
        return [r.user_id for r in requests]

    batcher = MicroBatcher(recommend, window_ms=0.0)

    async def scenario() -> list:
        busy = asyncio.ensure_future(batcher.submit_async([RecommendRequest(user_id=1)]))  # holds the worker
        await asyncio.sleep(0.05)
        abandoned = asyncio.ensure_future(batcher.submit_async([RecommendRequest(user_id=2)]))  # queued
        await asyncio.sleep(0.05)
        abandoned.cancel()  # its HTTP client went away
        await asyncio.sleep(0.05)  # the cancellation reaches the worker's future
        release.set()
        later = await asyncio.wait_for(batcher.submit_async([RecommendRequest(user_id=3)]), timeout=5)
        return [await busy, abandoned.cancelled(), later]

    assert asyncio.run(scenario()) == [[1], True, [3]]
