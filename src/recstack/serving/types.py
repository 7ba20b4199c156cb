"""The service's request and response values (plain dataclasses: the HTTP layer maps onto them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

MAX_K = 100
MAX_CANDIDATES = 1000
# Stored users whose served inputs are kept (UserCache): ~6 KB each for the MovieLens DIN schema.
DEFAULT_USER_CACHE = 16_384


class RequestError(ValueError):
    """A request the service cannot answer; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DeadlineExceeded(RuntimeError):
    """A request was not answered within its deadline (``ServingLimits.deadline_ms``); HTTP 504."""

    def __init__(self, deadline_ms: float) -> None:
        super().__init__(f"the request was not answered within its deadline of {deadline_ms:g} ms (deadline_ms); ask for fewer users or candidates, or retry later")
        self.deadline_ms = deadline_ms


@dataclass(frozen=True)
class RecommendRequest:
    """One user's request.

    Attributes:
        user_id: a known user (stored features and history are used) or None / an unknown id.
        features: raw user feature values (``{"age": 30, "gender": "F"}``); they override the
            stored ones.
        history: item ids, oldest first; overrides the stored history (``[]`` means none).
        k: items to return, 1..``ServingLimits.max_k`` (100 by default).
        exclude_seen: never return an item of the history.
        candidates: N, the items recalled from the index and scored by the ranker
            (1..``ServingLimits.max_candidates``, 1000 by default).
    """

    user_id: Any = None
    features: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Any] | None = None
    k: int = 10
    exclude_seen: bool = True
    candidates: int = 100

    def validate(self, limits: Any = None) -> None:
        """``RequestError`` if a field is out of range (``limits``: a ``ServingLimits``, default ones if None)."""
        from recstack.serving.limits import ServingLimits  # limits.py imports this module

        (limits or ServingLimits()).check_request(self)


@dataclass(frozen=True)
class RecommendedItem:
    item_id: Any
    title: str | None
    genres: list[str]
    recall_score: float | None  # inner product of user and item vectors; popularity share on fallback
    rank_score: float | None  # the ranker's click probability (a multi-task ranker's blend); None on the popular fallback
    rank: int  # 1-based
    head_scores: dict[str, float] | None = None  # a multi-task ranker's score per head (click, like, click_and_like)

    def to_dict(self) -> dict[str, Any]:
        plain = dict(self.__dict__)
        if plain["head_scores"] is None:  # a single-task ranker's items keep their six fields
            del plain["head_scores"]
        return plain


@dataclass(frozen=True)
class RecommendResponse:
    user_id: Any
    items: list[RecommendedItem]
    fallback: str | None = None  # "popular" when the user has no history to recall from
    reason: str | None = None  # why ``items`` is empty (every candidate excluded), else None

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "items": [i.to_dict() for i in self.items], "fallback": self.fallback, "reason": self.reason}
