"""``ServingLimits``: how much work one request may ask of the recommendation server.

Without limits one 40 KB request (256 users x 1000 candidates, k=100) made ~256k ranker rows in
one pass: 38 s of CPU during which no other request was answered, and 9 GB of memory. Each
limit below bounds one dimension of that work; a request beyond one is refused before any model
runs, with 413 (body) or 422 naming the field, its value and the limit::

    {"detail": [{"loc": ["body", "requests", 3, "candidates"], "type": "limit_exceeded",
                 "msg": "requests.3.candidates: 5000 is over the limit of 1000 (max_candidates)",
                 "value": 5000, "limit": 1000, "limit_name": "max_candidates"}]}

Accepted work is still bounded in time and memory: the ranker scores at most ``chunk_rows``
(user, candidate) rows per pass, and a request not answered within ``deadline_ms`` gets 504
(the server drops its remaining chunks and keeps serving the others).

Example::

    limits = ServingLimits(max_users=16, deadline_ms=500)
    service = RecommendationService(..., limits=limits)
    limits.check_request(RecommendRequest(user_id=1, k=500))  # LimitError: k: 500 is over the limit of 100 (max_k)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from recstack.errors import ConfigError
from recstack.serving.types import MAX_CANDIDATES, MAX_K, RecommendRequest, RequestError


@dataclass(frozen=True)
class ServingLimits:
    """Per-request bounds of the recommendation server (every value must be >= 1).

    Attributes:
        max_users: requests (users) in one ``{"requests": [...]}`` body. 64 users x 1000
            candidates is 64k ranker rows, ~1-2 s of one CPU thread for a DIN ranker.
        max_candidates: ``candidates`` (N, items recalled and ranked) of one request.
        max_k: ``k``, items returned per request.
        max_history: items in a request's own ``history`` (stored histories are not limited).
            Every history item is excluded from recall, so the index fetches k + history
            items per user; 1000 covers MovieLens' heaviest users (737 ratings in 100K).
        max_body_bytes: size of a ``POST`` body, checked on ``Content-Length`` and on the bytes
            actually received (chunked bodies), before the body is parsed: 1 MiB holds
            64 users with 1000-item histories.
        deadline_ms: time from arrival to response; past it the request gets 504.
        chunk_rows: (user, candidate) rows per ranker pass; bounds the ranker's memory (its
            batch is C rows of every feature, sequences included) and how long one request
            can hold the model before others get their turn.
    """

    max_users: int = 64
    max_candidates: int = MAX_CANDIDATES
    max_k: int = MAX_K
    max_history: int = 1000
    max_body_bytes: int = 1 << 20
    deadline_ms: int = 2000
    chunk_rows: int = 4096

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"serving limit {spec.name} must be an integer >= 1, got {value!r}")

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    def check_users(self, count: int) -> None:
        """``RequestError`` if a body holds more than ``max_users`` requests."""
        _check("requests", count, self.max_users, "max_users", what="requests")

    def check_request(self, request: RecommendRequest, *, at: str = "") -> None:
        """``RequestError`` naming the field, its value and the limit if ``request`` exceeds one.

        ``at``: the field prefix of this request in its body (``"requests.3."``).
        """
        for name, value in (("k", request.k), ("candidates", request.candidates)):
            if value < 1:
                raise RequestError(f"must be at least 1, got {value}", field=at + name)
        _check(at + "k", request.k, self.max_k, "max_k")
        _check(at + "candidates", request.candidates, self.max_candidates, "max_candidates")
        if request.history is not None:
            _check(at + "history", len(request.history), self.max_history, "max_history", what="items")


def _check(field: str, value: int, limit: int, name: str, *, what: str = "") -> None:
    if value > limit:
        shown = f"{value} {what}" if what else f"{value}"
        raise LimitError(f"{shown} is over the limit of {limit} ({name})", field=field, value=value, limit=limit, name=name)


class LimitError(RequestError):
    """A request beyond a ``ServingLimits`` value (HTTP 422); ``name`` is the limit's name."""

    def __init__(self, message: str, *, field: str, value: int, limit: int, name: str) -> None:
        super().__init__(message, field=field)
        self.value, self.limit, self.name = value, limit, name

    def detail(self) -> dict[str, Any]:
        return {"value": self.value, "limit": self.limit, "limit_name": self.name}
