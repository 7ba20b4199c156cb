"""The HTTP front of ``RecommendationService`` (FastAPI), plus the demo page at ``/``.

Endpoints: ``POST /recommend`` (one request object or ``{"requests": [...]}``), ``GET /health``,
``GET /items/{id}``, ``GET /users`` (ids, for the demo's picker), ``GET /users/{id}`` (features
and history with titles), ``/openapi.json``. Unknown body fields are a 422 naming the field.

Every request is bounded by the service's ``ServingLimits`` (``limits.py``): a body over
``max_body_bytes`` is a 413 before it is parsed; more users, candidates, k or history items
than allowed is a 422 naming the field, its value and the limit; a request not answered within
``deadline_ms`` is a 504 with a JSON ``detail``, and the server keeps serving the others (model
work runs in the micro-batcher's thread, a chunk of rows at a time, never on the event loop).

Example::

    app = create_app(service)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Union

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, Tag

from recstack.serving.body_limit import BodyLimit
from recstack.serving.limits import LimitError, ServingLimits
from recstack.serving.micro_batcher import MicroBatcher
from recstack.serving.service import RecommendationService
from recstack.serving.types import DeadlineExceeded, RecommendRequest, RequestError

STATIC = Path(__file__).parent / "static"
Id = Union[StrictInt, StrictStr]
FeatureValue = Union[StrictInt, StrictFloat, StrictStr, None]


class RecommendBody(BaseModel):
    """One user's request: a known ``user_id`` and/or raw ``features`` and ``history``."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = None
    features: dict[str, FeatureValue] = Field(default_factory=dict, description="raw user features, overriding stored ones")
    history: list[Id] | None = Field(default=None, description="item ids, oldest first; overrides the stored history (at most max_history items, 1000 by default)")
    # upper bounds are the server's ServingLimits (422 beyond them), not fixed here
    k: Annotated[StrictInt, Field(ge=1, description="items returned, at most max_k (100 by default)")] = 10
    exclude_seen: StrictBool = True
    candidates: Annotated[StrictInt, Field(ge=1, description="items recalled and ranked, at most max_candidates (1000 by default)")] = 100

    def to_request(self, limits: ServingLimits | None = None) -> RecommendRequest:
        """The service's request; ``k`` / ``candidates`` left out default to at most the limits."""
        k, candidates = self.k, self.candidates
        if limits is not None:
            k = k if "k" in self.model_fields_set else min(k, limits.max_k)
            candidates = candidates if "candidates" in self.model_fields_set else min(candidates, limits.max_candidates)
        return RecommendRequest(user_id=self.user_id, features=dict(self.features), history=self.history, k=k, exclude_seen=self.exclude_seen, candidates=candidates)


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: Annotated[list[RecommendBody], Field(min_length=1, description="at most max_users requests (64 by default)")]


class ItemOut(BaseModel):
    item_id: Id
    title: str | None
    genres: list[str]
    recall_score: float | None
    rank_score: float | None
    rank: int
    head_scores: dict[str, float] | None = None  # a multi-task ranker's score per head


class RecommendOut(BaseModel):
    user_id: Id | None
    items: list[ItemOut]
    fallback: str | None = None
    reason: str | None = Field(default=None, description="why items is empty (every candidate excluded), else null")


class BatchOut(BaseModel):
    responses: list[RecommendOut]


def _body_kind(value: Any) -> str:
    """A body with ``requests`` is a batch; anything else is validated as one request."""
    return "batch" if isinstance(value, dict) and "requests" in value else "single"


Body = Annotated[Union[Annotated[BatchBody, Tag("batch")], Annotated[RecommendBody, Tag("single")]], Discriminator(_body_kind)]


def create_app(service: RecommendationService, *, batch_window_ms: float | None = 1.0) -> FastAPI:
    """A FastAPI app over an already-built service (models and index are loaded once, here).

    ``batch_window_ms``: concurrent ``/recommend`` calls arriving within this window share one
    ``service.recommend`` call (``MicroBatcher``, in rounds of at most ``chunk_rows`` candidate
    rows); None serves each call on its own thread. The limits are ``service.limits``.
    """
    limits: ServingLimits = service.limits
    app = FastAPI(title="recstack recommendations", version="1")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if batch_window_ms is None:

        async def run_batch(requests: list[RecommendRequest]) -> list[Any]:
            deadline = time.monotonic() + limits.deadline_s  # checked by the service between chunks
            return await run_in_threadpool(lambda: service.recommend(requests, deadline=deadline))

    else:
        batcher = MicroBatcher(service.recommend, window_ms=batch_window_ms, max_rows=limits.chunk_rows)

        async def run_batch(requests: list[RecommendRequest]) -> list[Any]:
            return await batcher.submit_async(requests, deadline_ms=limits.deadline_ms)

    # The response is serialised here with orjson and returned as is: FastAPI then skips
    # re-validating it against response_model, which only documents it in the OpenAPI schema.
    @app.post("/recommend", response_model=Union[RecommendOut, BatchOut])
    async def recommend(body: Body) -> Response:
        batched = isinstance(body, BatchBody)
        requests = [r.to_request(limits) for r in body.requests] if batched else [body.to_request(limits)]
        try:
            _check_limits(limits, requests, batched)
            responses = [r.to_dict() for r in await run_batch(requests)]
        except RequestError as error:
            return _unprocessable(error)
        except DeadlineExceeded as error:
            return JSONResponse(status_code=504, content={"detail": str(error), "deadline_ms": limits.deadline_ms})
        content = {"responses": responses} if batched else responses[0]
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @app.get("/health")
    def health() -> dict[str, Any]:
        models = service.models
        return {"status": "ok", "pid": os.getpid(), "items": len(service.catalogue.items), "indexed": len(models.index), "retrieval_run": str(models.retrieval.paths.root), "ranking_run": str(models.ranker.paths.root), "user_cache": models.user_cache.stats()}

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        row = _row(service.catalogue.items, item_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"unknown item {item_id!r}")
        return row

    @app.get("/users")
    def users(limit: int = 2000) -> dict[str, Any]:
        return {"user_ids": [_plain(u) for u in service.catalogue.users.keys[:limit]]}

    @app.get("/users/{user_id}")
    def user(user_id: str) -> dict[str, Any]:
        key = _typed_key(service.catalogue.users.keys, user_id)
        features = _row(service.catalogue.users, user_id)
        history = service.catalogue.histories.get(key)
        if features is None and history is None:
            raise HTTPException(status_code=404, detail=f"unknown user {user_id!r}")
        history = history if history is not None else np.zeros(0, np.int64)
        titles, genres = service.describe(history)
        return {
            "user_id": _plain(key),
            "features": features or {},
            "history": [{"item_id": _plain(i), "title": t, "genres": g} for i, t, g in zip(history, titles, genres)],
        }

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _check_limits(limits: ServingLimits, requests: list[RecommendRequest], batched: bool) -> None:
    """``LimitError`` (422) naming the first field of the body beyond ``limits``."""
    if batched:
        limits.check_users(len(requests))
    for i, request in enumerate(requests):
        limits.check_request(request, at=f"requests.{i}." if batched else "")


def _unprocessable(error: RequestError) -> JSONResponse:
    loc = ["body", *(int(part) if part.isdigit() else part for part in error.field.split("."))]
    detail = {"loc": loc, "msg": str(error), "type": "limit_exceeded" if isinstance(error, LimitError) else "value_error"}
    if isinstance(error, LimitError):
        detail.update(error.detail())
    return JSONResponse(status_code=422, content={"detail": [detail]})


def _typed_key(keys: np.ndarray, raw: str) -> Any:
    """A path parameter as the key column's type (ids are ints in MovieLens)."""
    if np.issubdtype(keys.dtype, np.integer):
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def _row(table: Any, raw: str) -> dict[str, Any] | None:
    key = _typed_key(table.keys, raw)
    rows = table.positions([key])
    if rows[0] < 0:
        return None
    return {k: v[0] for k, v in table.take(rows, table.columns).to_pydict().items()}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
