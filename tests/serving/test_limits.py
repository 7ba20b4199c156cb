"""Per-request limits: oversized and malformed requests are refused with the field named, work
is ranked in bounded chunks, and a request past its deadline gets 504 while others are served."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from recstack.errors import ConfigError
from recstack.serving.catalogue import Catalogue
from recstack.serving.http import create_app
from recstack.serving.limits import LimitError, ServingLimits
from recstack.serving.ranker_scorer import RankerScorer
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest
from recstack.workflows.serve import serving_limits

from .live_server import live

LIMITS = ServingLimits(max_users=8, max_candidates=40, max_k=20, max_history=50, max_body_bytes=2048, deadline_ms=1000, chunk_rows=16)


@pytest.fixture(scope="module")
def limited(tiny_runs: dict[str, Path]) -> RecommendationService:
    """The tiny runs served under small limits (a 16-row ranker chunk, a 1 s deadline)."""
    catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=tiny_runs["users"], history=tiny_runs["history"])
    return RecommendationService(retrieval_run=tiny_runs["retrieval"], ranking_run=tiny_runs["ranker"], catalogue=catalogue, backend="exact", limits=LIMITS)


@pytest.fixture(scope="module")
def client(limited: RecommendationService) -> TestClient:
    return TestClient(create_app(limited))


@pytest.fixture
def scorer_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row count of every ranker pass, recorded by wrapping the served scorer."""
    calls: list[int] = []
    original = RankerScorer.__call__

    def recording(self: RankerScorer, batch) -> np.ndarray:
        calls.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(RankerScorer, "__call__", recording)
    return calls


def _detail(response) -> dict:
    [detail] = response.json()["detail"]
    return detail


# ---- 422: limits on the request's fields, each named with its value and the limit ------------------
@pytest.mark.parametrize(
    "body, loc, value, limit_name",
    [
        ({"requests": [{"user_id": u} for u in range(1, 10)]}, ["body", "requests"], 9, "max_users"),
        ({"user_id": 1, "candidates": 41}, ["body", "candidates"], 41, "max_candidates"),
        ({"user_id": 1, "k": 21}, ["body", "k"], 21, "max_k"),
        ({"user_id": 1, "history": list(range(1, 41)) + list(range(1, 12))}, ["body", "history"], 51, "max_history"),
        ({"requests": [{"user_id": 1}, {"user_id": 2, "candidates": 1000}]}, ["body", "requests", 1, "candidates"], 1000, "max_candidates"),
    ],
)
def test_a_request_beyond_a_limit_is_422_naming_field_value_and_limit(client: TestClient, body: dict, loc: list, value: int, limit_name: str) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    detail = _detail(response)
    limit = getattr(LIMITS, limit_name)
    assert detail["loc"] == loc and detail["value"] == value and detail["limit"] == limit and detail["limit_name"] == limit_name
    assert f"{value}" in detail["msg"] and f"{limit}" in detail["msg"] and limit_name in detail["msg"] and loc[-1] != "body"


@pytest.mark.parametrize("content, field", [(b"{not json", None), (b'{"user_id": 1, "k": 0}', "k"), (b'{"requests": []}', "requests")])
def test_malformed_bodies_are_422(client: TestClient, content: bytes, field: str | None) -> None:
    response = client.post("/recommend", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert field is None or any(field in error["loc"] for error in response.json()["detail"])


def test_requests_within_the_limits_are_answered(client: TestClient) -> None:
    body = {"requests": [{"user_id": u, "k": 20, "candidates": 40, "history": list(range(1, 11))} for u in range(1, 9)]}
    response = client.post("/recommend", json=body)
    assert response.status_code == 200
    assert [len(r["items"]) for r in response.json()["responses"]] == [20] * 8


def test_k_and_candidates_left_out_default_to_within_the_limits(client: TestClient, scorer_calls: list[int]) -> None:
    response = client.post("/recommend", json={"user_id": 1, "exclude_seen": False})  # defaults: k 10, candidates 100 > 40
    assert response.status_code == 200 and len(response.json()["items"]) == 10
    assert sum(scorer_calls) == LIMITS.max_candidates


def test_the_service_itself_refuses_requests_beyond_its_limits(limited: RecommendationService) -> None:
    with pytest.raises(LimitError, match=r"k: 21 is over the limit of 20 \(max_k\)"):
        limited.recommend([RecommendRequest(user_id=1, k=21)])


def test_limits_must_be_positive_integers() -> None:
    with pytest.raises(ConfigError, match="max_users"):
        ServingLimits(max_users=0)
    with pytest.raises(ConfigError, match="deadline_ms"):
        serving_limits(deadline_ms=-5)
    assert serving_limits(max_k=7, chunk_rows=None) == ServingLimits(max_k=7)


# ---- 413: the body cap, before the body is parsed -----------------------------------------------
def test_a_2mb_body_with_a_250k_item_history_is_413(service: RecommendationService) -> None:
    body = orjson.dumps({"user_id": 1, "history": list(range(250_000))})
    assert len(body) > 1_500_000
    response = TestClient(create_app(service)).post("/recommend", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    detail = _detail(response)
    assert detail["limit_name"] == "max_body_bytes" and detail["limit"] == ServingLimits().max_body_bytes and detail["value"] == len(body)


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    chunks = (b" " * 512 for _ in range(10))  # no Content-Length: the bytes are counted
    response = client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _detail(response)["limit_name"] == "max_body_bytes" and "2048" in _detail(response)["msg"]


def _status_line(sock: socket.socket) -> bytes:
    return sock.recv(65536).split(b"\r\n", 1)[0]


def test_the_body_cap_answers_before_the_body_has_arrived(limited: RecommendationService) -> None:
    """A server that parsed first would wait for bytes that never come (socket timeout here)."""
    with live(create_app(limited)) as address:
        with socket.create_connection(address, timeout=5) as sock:  # declared too large, nothing sent
            sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n")
            assert _status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"
        with socket.create_connection(address, timeout=5) as sock:  # chunked, never finished
            sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")  # 3 KiB of a 2 KiB limit, no last chunk
            assert _status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"


# ---- bounded work: chunks and the deadline ------------------------------------------------------
def test_the_ranker_sees_at_most_chunk_rows_and_results_do_not_change(limited: RecommendationService, service: RecommendationService, scorer_calls: list[int]) -> None:
    requests = [RecommendRequest(user_id=u, k=20, candidates=40, exclude_seen=False) for u in (1, 2, 3)]
    chunked = limited.recommend(requests)
    assert max(scorer_calls) <= LIMITS.chunk_rows and sum(scorer_calls) == 3 * 40 and len(scorer_calls) == 8
    scorer_calls.clear()
    whole = service.recommend(requests)  # the default chunk (4096 rows) holds all 120 rows
    assert scorer_calls == [120]
    for a, b in zip(chunked, whole):
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        np.testing.assert_allclose([i.rank_score for i in a.items], [i.rank_score for i in b.items], atol=1e-6)


def test_a_request_past_its_deadline_gets_504_while_others_are_served(limited: RecommendationService, scorer_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow ranker (0.2 s a pass): 8 users x 16 candidates is 8 passes, 1.6 s > the 1 s deadline."""
    recording = RankerScorer.__call__

    def slow(self: RankerScorer, batch) -> np.ndarray:
        time.sleep(0.2)
        return recording(self, batch)

    monkeypatch.setattr(RankerScorer, "__call__", slow)
    heavy = {"requests": [{"user_id": u, "candidates": 16, "k": 5} for u in range(1, 9)]}
    results: dict[str, tuple[int, float, dict]] = {}
    with live(create_app(limited)) as (host, port):
        url = f"http://{host}:{port}/recommend"

        def post(name: str, body: dict) -> None:
            start = time.perf_counter()
            response = httpx.post(url, json=body, timeout=10)
            results[name] = (response.status_code, time.perf_counter() - start, response.json())

        big = threading.Thread(target=post, args=("heavy", heavy))
        big.start()
        time.sleep(0.3)  # the heavy request holds the ranker
        post("light", {"user_id": 1, "candidates": 10, "k": 3})
        big.join()
        passes_at_504 = len(scorer_calls)
        time.sleep(0.5)
        assert len(scorer_calls) <= passes_at_504 + 1  # the dropped request's remaining chunks never run
        post("after", {"user_id": 2, "k": 3})
    status, light_s, light = results["light"]
    assert status == 200 and len(light["items"]) == 3
    assert light_s < 0.8, f"a light request waited {light_s:.2f} s behind a heavy one"
    status, heavy_s, heavy_body = results["heavy"]
    assert status == 504 and "deadline" in heavy_body["detail"] and heavy_body["deadline_ms"] == LIMITS.deadline_ms
    assert LIMITS.deadline_s - 0.05 < heavy_s < LIMITS.deadline_s + 0.5
    assert passes_at_504 < 8 + 1  # the heavy request's 8 passes were not all run
    assert results["after"][0] == 200


def test_the_deadline_holds_without_the_micro_batcher(limited: RecommendationService, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RankerScorer.__call__
    monkeypatch.setattr(RankerScorer, "__call__", lambda self, batch: (time.sleep(0.2), original(self, batch))[1])
    client = TestClient(create_app(limited, batch_window_ms=None))
    start = time.perf_counter()
    response = client.post("/recommend", json={"requests": [{"user_id": u, "candidates": 40} for u in range(1, 9)]})  # 20 passes
    assert response.status_code == 504 and "deadline" in response.json()["detail"]
    assert time.perf_counter() - start < LIMITS.deadline_s + 0.5  # one pass past the deadline at most


# ---- nothing left to recommend ------------------------------------------------------------------
def test_a_request_whose_candidates_are_all_excluded_gets_an_empty_list_and_a_reason(client: TestClient, limited: RecommendationService) -> None:
    every_item = limited.catalogue.items.keys.tolist()[:LIMITS.max_history]
    assert len(every_item) == len(limited.models.index)
    response = client.post("/recommend", json={"user_id": 1, "history": every_item, "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == [] and "excluded" in body["reason"] and body["fallback"] is None
    normal = client.post("/recommend", json={"user_id": 1, "k": 5}).json()
    assert len(normal["items"]) == 5 and normal["reason"] is None


def test_serve_refuses_a_bad_limit_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recstack.cli import main

    code = main(["serve", "--retrieval", str(tmp_path / "missing"), "--ranker", str(tmp_path / "missing"), "--catalog", "items.parquet", "--max-candidates", "0"])
    assert code != 0
    assert "max_candidates must be an integer >= 1, got 0" in capsys.readouterr().err
