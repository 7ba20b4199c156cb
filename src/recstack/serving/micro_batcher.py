"""Micro-batching: concurrent requests share ``recommend`` calls, in rounds of bounded work.

HTTP handlers submit their requests (a "job") and await. One worker thread serves every job in
rounds: a round takes requests from the waiting jobs, in turn, until ``max_rows`` candidate
rows (the sum of their ``candidates``) or ``max_batch`` requests, and runs ``recommend`` once on
them. A job too large for one round keeps its place in a rotation: the jobs served in a round
go behind the others, so a small request arriving while a large one is being served waits for
one round (one ranker chunk), not for the whole large request. A lone job waits ``window_ms``
for others to join its first round; under load the queue fills while the worker is busy, so
rounds form without waiting.

A job with a deadline (``deadline_ms`` from submission) that runs past it gets
``DeadlineExceeded``; its remaining requests are dropped, never computed. A caller that stops
waiting (a cancelled HTTP handler) is dropped likewise.

A request error (a bad history id type) in a shared round would fail every caller, so such a
round is re-run one job at a time and the error reaches only the caller that caused it.

Example::

    batcher = MicroBatcher(service.recommend, window_ms=1.0, max_rows=4096)
    [response] = batcher.submit([RecommendRequest(user_id=1, k=10)], deadline_ms=2000)
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from recstack.serving.types import DeadlineExceeded, RecommendRequest, RecommendResponse, RequestError

Recommend = Callable[[Sequence[RecommendRequest]], list[RecommendResponse]]


@dataclass(eq=False)
class _Job:
    """One caller's requests and how far the worker has got with them."""

    requests: list[RecommendRequest]
    deadline_ms: float | None
    future: Future = field(default_factory=Future)
    deadline: float | None = None  # time.monotonic() instant
    answered: list[Any] = field(default_factory=list)  # responses of requests[: len(answered)]
    started: bool = False
    abandoned: bool = False  # the caller stopped waiting

    def __post_init__(self) -> None:
        if self.deadline_ms is not None:
            self.deadline = time.monotonic() + self.deadline_ms / 1000

    @property
    def next(self) -> int:
        return len(self.answered)


class MicroBatcher:
    """Runs ``recommend`` on the requests of concurrent callers together, in one worker thread.

    Args:
        recommend: the batched function (``RecommendationService.recommend``).
        window_ms: how long the worker waits after a lone first request for others to join.
        max_batch: the most requests one call serves.
        max_rows: the most candidate rows (sum of ``candidates``) one call serves; a single
            request larger than this is served alone. ``ServingLimits.chunk_rows`` in the server.
    """

    def __init__(self, recommend: Recommend, *, window_ms: float = 1.0, max_batch: int = 64, max_rows: int = 4096) -> None:
        if window_ms < 0 or max_batch < 1 or max_rows < 1:
            raise ValueError(f"need window_ms >= 0, max_batch >= 1 and max_rows >= 1, got {window_ms}, {max_batch}, {max_rows}")
        self._recommend = recommend
        self.window_s = window_ms / 1000
        self.max_batch, self.max_rows = max_batch, max_rows
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="recstack-micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, requests: Sequence[RecommendRequest], *, deadline_ms: float | None = None) -> list[RecommendResponse]:
        """The responses to ``requests``, in order (blocks until they have all been served).

        ``deadline_ms``: raise ``DeadlineExceeded`` if they are not served within it.
        """
        job = _Job(list(requests), deadline_ms)
        self._queue.put(job)
        return job.future.result()

    async def submit_async(self, requests: Sequence[RecommendRequest], *, deadline_ms: float | None = None) -> list[RecommendResponse]:
        """``submit`` for an event loop: awaits without holding a thread, and raises
        ``DeadlineExceeded`` at the deadline itself, not at the worker's next round."""
        job = _Job(list(requests), deadline_ms)
        self._queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=None if deadline_ms is None else deadline_ms / 1000)
        except TimeoutError:
            job.abandoned = True
            raise DeadlineExceeded(deadline_ms or 0) from None
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    # ---- the worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        waiting: deque[_Job] = deque()  # jobs with requests left, in serving order
        served: list[_Job] = []  # jobs served in the last round
        while True:
            if not waiting:
                waiting.append(self._queue.get())
                self._gather(waiting)
            else:
                self._drain(waiting)
            for job in served:  # behind the jobs that arrived meanwhile and those not served
                if job in waiting:
                    waiting.remove(job)
                    waiting.append(job)
            served = self._round(waiting)

    def _gather(self, waiting: deque[_Job]) -> None:
        """Wait up to ``window_s`` for more jobs while the first round is not yet full."""
        deadline = time.perf_counter() + self.window_s
        size = len(waiting[0].requests)
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    return
                try:
                    job = self._queue.get(timeout=wait)
                except queue.Empty:
                    return
            waiting.append(job)
            size += len(job.requests)

    def _drain(self, waiting: deque[_Job]) -> None:
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _round(self, waiting: deque[_Job]) -> list[_Job]:
        """Serve one round; returns the jobs it served that still have requests left."""
        picked: list[tuple[_Job, int]] = []  # (job, requests taken from job.next on)
        rows = count = 0
        now = time.monotonic()
        for job in list(waiting):
            if not self._live(job, now):
                waiting.remove(job)
                continue
            if not job.requests:
                job.future.set_result([])
                waiting.remove(job)
                continue
            stop = job.next
            while stop < len(job.requests) and count < self.max_batch:
                cost = max(1, int(getattr(job.requests[stop], "candidates", 1)))
                if count and rows + cost > self.max_rows:
                    break
                rows, count, stop = rows + cost, count + 1, stop + 1
            if stop > job.next:
                picked.append((job, stop - job.next))
            if stop < len(job.requests):
                break  # the round is full
        if not picked:
            return []
        self._serve(picked)
        for job, _ in picked:
            if job.future.done():
                waiting.remove(job)
        return [job for job, _ in picked if not job.future.done()]

    def _live(self, job: _Job, now: float) -> bool:
        """False (and the caller answered, if anyone waits) for a job that must not be served."""
        if not job.started:
            # A caller that gave up while queued is dropped here; after this call the future
            # can no longer be cancelled, so setting its result cannot fail.
            if not job.future.set_running_or_notify_cancel():
                return False
            job.started = True
        if job.abandoned:
            job.future.set_exception(CancelledError())
            return False
        if job.deadline is not None and now > job.deadline:
            job.future.set_exception(DeadlineExceeded(job.deadline_ms or 0))
            return False
        return True

    def _serve(self, picked: list[tuple[_Job, int]]) -> None:
        try:
            responses = self._recommend([r for job, n in picked for r in job.requests[job.next : job.next + n]])
        except RequestError as error:
            if len(picked) == 1:
                picked[0][0].future.set_exception(error)
                return
            for job, n in picked:  # find the caller at fault; the others still get answers
                self._serve_one(job, n)
            return
        except BaseException as error:  # noqa: BLE001 - the callers must not hang
            for job, _ in picked:
                job.future.set_exception(error)
            return
        start = 0
        for job, n in picked:
            self._answer(job, responses[start : start + n])
            start += n

    def _serve_one(self, job: _Job, n: int) -> None:
        """``n`` of one (already running) job's requests on their own."""
        try:
            self._answer(job, self._recommend(job.requests[job.next : job.next + n]))
        except BaseException as error:  # noqa: BLE001 - the caller must not hang
            job.future.set_exception(error)

    @staticmethod
    def _answer(job: _Job, responses: list[Any]) -> None:
        job.answered.extend(responses)
        if job.next == len(job.requests):
            job.future.set_result(job.answered)
