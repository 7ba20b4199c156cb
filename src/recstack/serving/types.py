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


@dataclass(frozen=True)
class RecommendRequest:
    """One user's request.

    Attributes:
        user_id: a known user (stored features and history are used) or None / an unknown id.
        features: raw user feature values (``{"age": 30, "gender": "F"}``); they override the
            stored ones.
        history: item ids, oldest first; overrides the stored history (``[]`` means none).
        k: items to return, 1..100.
        exclude_seen: never return an item of the history.
        candidates: N, the items recalled from the index and scored by the ranker.
    """

    user_id: Any = None
    features: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Any] | None = None
    k: int = 10
    exclude_seen: bool = True
    candidates: int = 100

    def validate(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise RequestError(f"must be between 1 and {MAX_K}, got {self.k}", field="k")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise RequestError(f"must be between 1 and {MAX_CANDIDATES}, got {self.candidates}", field="candidates")


@dataclass(frozen=True)
class RecommendedItem:
    item_id: Any
    title: str | None
    genres: list[str]
    recall_score: float | None  # inner product of user and item vectors; popularity share on fallback
    rank_score: float | None  # the ranker's click probability; None on the popular fallback
    rank: int  # 1-based

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RecommendResponse:
    user_id: Any
    items: list[RecommendedItem]
    fallback: str | None = None  # "popular" when the user has no history to recall from

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "items": [i.to_dict() for i in self.items], "fallback": self.fallback}
