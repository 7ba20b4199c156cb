"""Micro-batching: concurrent requests share one ``recommend`` call (one model pass each stage).

HTTP handlers run in a thread pool; each submits its requests and waits. One worker thread
takes everything queued, waits up to ``window_ms`` after the first request for more (at most
``max_batch`` requests), runs ``service.recommend`` once and hands each caller its responses.
Under load the queue fills while the worker is busy, so batches form without waiting; with
``window_ms=0`` a lone request is never delayed.

A request error (a bad history id type) in a shared batch would fail every caller, so such a
batch is re-run one caller at a time and the error reaches only the caller that caused it.

Example::

    batcher = MicroBatcher(service.recommend, window_ms=1.0)
    [response] = batcher.submit([RecommendRequest(user_id=1, k=10)])
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from recstack.serving.types import RecommendRequest, RecommendResponse, RequestError

Recommend = Callable[[Sequence[RecommendRequest]], list[RecommendResponse]]


class MicroBatcher:
    """Runs ``recommend`` on the requests of concurrent callers together, in one worker thread.

    Args:
        recommend: the batched function (``RecommendationService.recommend``).
        window_ms: how long the worker waits after the first request for others to join.
        max_batch: the most requests one call serves.
    """

    def __init__(self, recommend: Recommend, *, window_ms: float = 1.0, max_batch: int = 64) -> None:
        if window_ms < 0 or max_batch < 1:
            raise ValueError(f"need window_ms >= 0 and max_batch >= 1, got {window_ms}, {max_batch}")
        self._recommend = recommend
        self.window_s = window_ms / 1000
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[list[RecommendRequest], Future]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="recstack-micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, requests: Sequence[RecommendRequest]) -> list[RecommendResponse]:
        """The responses to ``requests``, in order (blocks until their batch has run)."""
        future: Future = Future()
        self._queue.put((list(requests), future))
        return future.result()

    async def submit_async(self, requests: Sequence[RecommendRequest]) -> list[RecommendResponse]:
        """``submit`` for an event loop: awaits the batch without holding a thread."""
        future: Future = Future()
        self._queue.put((list(requests), future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            size = len(jobs[0][0])
            deadline = time.perf_counter() + self.window_s
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    wait = deadline - time.perf_counter()
                    if wait <= 0:
                        break
                    try:
                        job = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                jobs.append(job)
                size += len(job[0])
            self._serve(jobs)

    def _serve(self, jobs: list[tuple[list[RecommendRequest], Future]]) -> None:
        # A caller that gave up (an awaiting HTTP handler cancelled) is dropped here; after
        # this call a future can no longer be cancelled, so setting its result cannot fail.
        jobs = [job for job in jobs if job[1].set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            responses = self._recommend([r for requests, _ in jobs for r in requests])
        except RequestError as error:
            if len(jobs) == 1:
                jobs[0][1].set_exception(error)
                return
            for job in jobs:  # find the caller at fault; the others still get answers
                self._serve_one(job)
            return
        except BaseException as error:  # noqa: BLE001 - the callers must not hang
            for _, future in jobs:
                future.set_exception(error)
            return
        start = 0
        for requests, future in jobs:
            future.set_result(responses[start : start + len(requests)])
            start += len(requests)

    def _serve_one(self, job: tuple[list[RecommendRequest], Future]) -> None:
        """One (already running) caller's requests on their own."""
        requests, future = job
        try:
            future.set_result(self._recommend(requests))
        except BaseException as error:  # noqa: BLE001 - the caller must not hang
            future.set_exception(error)
