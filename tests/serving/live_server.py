"""A FastAPI app under a real uvicorn server in a thread, for tests that need real sockets."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import uvicorn


@contextlib.contextmanager
def live(app) -> Iterator[tuple[str, int]]:
    """``app`` under a real uvicorn server on a free port, in a thread: (host, port)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
