"""Milvus Lite under load: transient failures of inserts and flushes are retried within a bounded
budget, then fail with an error naming the operation, the collection and the uri; concurrent
inserts and searches from threads all succeed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pymilvus.exceptions import MilvusException, ParamError

import recstack.retrieval.index.milvus as milvus_module
from recstack.errors import RecstackError
from recstack.retrieval.index import ExactIndex, MilvusIndex

from .conftest import DIM, clustered


@pytest.fixture
def lite(tmp_path, monkeypatch):
    monkeypatch.setattr(milvus_module, "RETRY_FIRST_WAIT_S", 0.001)  # keep the backoff test fast
    index = MilvusIndex(dim=DIM, uri=str(tmp_path / "items.db"), collection="items", index_type="FLAT")
    yield index
    index.close()


class Flaky:
    """Wraps one client method: the first ``failures`` calls raise a MilvusException."""

    def __init__(self, method, failures: int) -> None:
        self.method, self.failures, self.calls = method, failures, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise MilvusException(message=f"injected failure {self.calls}: segment flush timed out")
        return self.method(*args, **kwargs)


def test_a_failing_flush_is_retried_then_succeeds(lite, monkeypatch):
    ids, vectors = np.arange(300), clustered(300, DIM, 5, seed=1)
    lite.add(ids, vectors)
    flaky = Flaky(lite._client.flush, failures=2)
    monkeypatch.setattr(lite._client, "flush", flaky)
    lite.flush()
    assert flaky.calls == 3
    assert len(lite) == 300
    assert lite.search(vectors[:1], k=1)[1][0, 0] == 0


def test_a_retried_insert_is_not_stored_twice(lite, monkeypatch):
    """The first insert reaches Milvus but its reply is 'lost': the retry must not duplicate rows."""
    ids, vectors = np.arange(50), clustered(50, DIM, 5, seed=2)
    insert = lite._client.insert
    calls = []

    def lands_then_fails(*args, **kwargs):
        calls.append(1)
        insert(*args, **kwargs)
        raise MilvusException(message="connection reset after the write")

    monkeypatch.setattr(lite._client, "insert", lands_then_fails)
    lite.add(ids, vectors)
    lite.flush()
    assert len(calls) == 1 and len(lite) == 50
    _, found = lite.search(vectors[:3], k=2)
    assert found[:, 0].tolist() == [0, 1, 2] and len(set(found.ravel())) == 6  # no duplicate rows


def test_exhausted_retries_name_the_operation_collection_uri_and_last_error(lite, monkeypatch):
    lite.retry_attempts = 3
    flaky = Flaky(lite._client.insert, failures=100)
    monkeypatch.setattr(lite._client, "insert", flaky)
    monkeypatch.setattr(lite._client, "upsert", flaky)
    with pytest.raises(RecstackError) as error:
        lite.add(np.arange(5), clustered(5, DIM, 1, seed=3))
    message = str(error.value)
    assert flaky.calls == 3
    for part in ("insert", "'items'", lite.uri, "3 time(s)", "injected failure 3", "segment flush timed out"):
        assert part in message, (part, message)
    assert isinstance(error.value.__cause__, MilvusException)


def test_the_retry_budget_bounds_the_time_spent(lite, monkeypatch):
    monkeypatch.setattr(milvus_module, "RETRY_FIRST_WAIT_S", 0.05)
    lite.retry_attempts, lite.retry_budget_s = 100, 0.3
    monkeypatch.setattr(lite._client, "flush", Flaky(lite._client.flush, failures=1000))
    import time

    start = time.monotonic()
    with pytest.raises(RecstackError, match="flush on collection 'items'"):
        lite.flush()
    assert time.monotonic() - start < 1.0
    with pytest.raises(RecstackError, match="flush"):  # close reports the failed flush ...
        lite.close()
    reopened = MilvusIndex(dim=DIM, uri=lite.uri, collection="items", index_type="FLAT")  # ... yet frees the folder
    reopened.close()


def test_request_errors_are_not_retried(lite, monkeypatch):
    calls = []

    def bad_request(*args, **kwargs):
        calls.append(1)
        raise ParamError(message="invalid parameter")

    monkeypatch.setattr(lite._client, "flush", bad_request)
    with pytest.raises(ParamError):
        lite.flush()
    assert len(calls) == 1
    monkeypatch.undo()


def test_concurrent_inserts_and_searches(lite):
    """Four writer threads add disjoint id ranges while two threads search; afterwards the index
    holds every row once and answers like brute force."""
    vectors = clustered(2_000, DIM, 20, seed=4)
    ids = np.arange(2_000) * 7 + 3
    queries = clustered(20, DIM, 20, seed=5)
    errors: list[BaseException] = []
    writing = threading.Event()

    def writer(part: int) -> None:
        try:
            for start in range(part * 500, (part + 1) * 500, 100):
                lite.add(ids[start : start + 100], vectors[start : start + 100])
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    def reader() -> None:
        try:
            while writing.is_set():
                scores, found = lite.search(queries, k=10)
                assert found.shape == (20, 10) and np.isin(found[found != -1], ids).all()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    writing.set()
    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(part,)) for part in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    writing.clear()
    for thread in readers:
        thread.join(timeout=60)
    assert not errors, errors
    lite.flush()
    assert len(lite) == 2_000
    reference = ExactIndex(dim=DIM)
    reference.add(ids, vectors)
    np.testing.assert_array_equal(lite.search(queries, k=10)[1], reference.search(queries, k=10)[1])
