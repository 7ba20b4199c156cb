"""End to end: ``recstack serve`` in a subprocess, the demo page in headless Chromium."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .processes import stop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; scripts/setup.sh does it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_runs: dict[str, Path]):
    port = _free_port()
    command = [
        sys.executable, "-m", "recstack.cli", "serve",
        "--retrieval", str(tiny_runs["retrieval"]), "--ranker", str(tiny_runs["ranker"]),
        "--catalog", str(tiny_runs["catalog"]), "--users", str(tiny_runs["users"]), "--history", str(tiny_runs["history"]),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"recstack serve did not start:\n{output}")
            time.sleep(0.2)
        yield url
    finally:
        stop(process, timeout=10)


def _dump_dom(url: str, profile: Path) -> str:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _cells(html: str, row_class: str) -> list[list[str]]:
    rows = re.findall(rf'<tr class="{row_class}">(.*?)</tr>', html, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)] for row in rows]


def test_demo_page_shows_history_and_scored_recommendations(server: str, tmp_path: Path) -> None:
    user = httpx.get(server + "/users/3").json()
    expected_titles = [h["title"] for h in user["history"]]
    html = _dump_dom(f"{server}/?user=3&k=7", tmp_path / "profile")

    history = _cells(html, "history-row")
    assert [row[1] for row in history] == expected_titles
    assert history[0][2] == ", ".join(user["history"][0]["genres"])

    recommendations = _cells(html, "recommendation")
    assert len(recommendations) == 7
    assert [row[0] for row in recommendations] == [str(r) for r in range(1, 8)]
    api = httpx.post(server + "/recommend", json={"user_id": 3, "k": 7}).json()["items"]
    assert [row[1] for row in recommendations] == [i["title"] for i in api]
    for row, item in zip(recommendations, api):
        assert row[3] == f"{item['recall_score']:.4f}" and row[4] == f"{item['rank_score']:.4f}"
    assert 'data-loaded="true"' in html


def test_demo_page_flags_the_popular_fallback(server: str, tmp_path: Path) -> None:
    html = _dump_dom(f"{server}/?user=424242&k=3", tmp_path / "profile")
    assert len(_cells(html, "recommendation")) == 3
    assert re.search(r'<p id="fallback" class="fallback">', html)  # no longer hidden
