"""``recstack serve --workers 2``: two server processes on one port, each answering in full."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest

from .processes import stop

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_share_the_port_and_answer_like_the_service(tiny_runs: dict[str, Path]) -> None:
    port = _free_port()
    command = [
        sys.executable, "-m", "recstack.cli", "serve", "--workers", "2",
        "--retrieval", str(tiny_runs["retrieval"]), "--ranker", str(tiny_runs["ranker"]),
        "--catalog", str(tiny_runs["catalog"]), "--users", str(tiny_runs["users"]), "--history", str(tiny_runs["history"]),
        "--backend", "exact", "--host", "127.0.0.1", "--port", str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 90
        while len(pids) < 2:  # a new connection per call: the kernel spreads them over the workers
            try:
                pids.add(httpx.get(url + "/health", timeout=2).json()["pid"])
            except httpx.TransportError:
                time.sleep(0.2)
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"two workers did not both answer (saw {pids}):\n{output[-3000:]}")
        assert process.pid not in pids  # the parent supervises; the workers serve

        catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=tiny_runs["users"], history=tiny_runs["history"])
        reference = RecommendationService(retrieval_run=tiny_runs["retrieval"], ranking_run=tiny_runs["ranker"], catalogue=catalogue, backend="exact")
        for user in (1, 2, 3, 4):
            body = httpx.post(url + "/recommend", json={"user_id": user, "k": 5}, timeout=10).json()
            [expected] = reference.recommend([RecommendRequest(user_id=user, k=5)])
            assert [i["item_id"] for i in body["items"]] == [i.item_id for i in expected.items]
    finally:
        stop(process, timeout=20)
