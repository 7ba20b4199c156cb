"""One rank score from a multi-task ranker's heads: a weighted product or a weighted sum.

Shape legend: C candidate rows.

``product``: ``prod_i p_i ** w_i`` (computed as ``exp(sum_i w_i log p_i)``); with the default
weights, 1 on each target, ``p(click) * p(like | click)`` = p(click and like). ``sum``:
``sum_i w_i p_i``. Written on the command line as ``product:click=1,like=0.5`` or
``sum:click=0.3,click_and_like=0.7``.

Example:
    >>> import numpy as np
    >>> blend = Blend.parse("product:click=1,like=0.5")
    >>> blend({"click": np.array([0.5, 0.2]), "like": np.array([0.25, 1.0])}).round(4).tolist()
    [0.25, 0.2]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import numpy as np

from recstack.errors import ConfigError

__all__ = ["Blend", "BlendKind"]

_FLOOR = 1e-12  # log of a probability of exactly 0 stays finite


class BlendKind(str, Enum):
    PRODUCT = "product"
    SUM = "sum"


@dataclass(frozen=True)
class Blend:
    """``kind`` and ``weights``: ``(head, weight)`` pairs, in order."""

    kind: BlendKind
    weights: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("blend: needs at least one head=weight")

    @classmethod
    def parse(cls, text: str) -> "Blend":
        """``"product:click=1,like=0.5"`` (ConfigError naming what is wrong)."""
        kind, sep, terms = text.partition(":")
        try:
            blend_kind = BlendKind(kind.strip().lower())
        except ValueError:
            raise ConfigError(f"blend: expected product:HEAD=W,... or sum:HEAD=W,..., got {text!r}") from None
        weights = []
        for term in filter(None, (t.strip() for t in terms.split(","))):
            head, eq, value = term.partition("=")
            try:
                weights.append((head.strip(), float(value)))
            except ValueError:
                raise ConfigError(f"blend: {term!r} is not HEAD=WEIGHT") from None
            if not eq or not head.strip():
                raise ConfigError(f"blend: {term!r} is not HEAD=WEIGHT")
        return cls(blend_kind, tuple(weights))

    @classmethod
    def default(cls, targets: Sequence[str]) -> "Blend":
        """The product of every target's score, weight 1 each."""
        return cls(BlendKind.PRODUCT, tuple((name, 1.0) for name in targets))

    def check(self, heads: Sequence[str]) -> None:
        """ConfigError naming a weighted head the ranker does not have."""
        unknown = [head for head, _ in self.weights if head not in heads]
        if unknown:
            raise ConfigError(f"blend: the ranker has no head {unknown[0]!r}; its heads: {', '.join(heads)}")

    def __call__(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(C,)`` float32 rank scores from ``{head: (C,)}``."""
        if self.kind is BlendKind.PRODUCT:
            logs = sum(weight * np.log(np.maximum(scores[head].astype(np.float64), _FLOOR)) for head, weight in self.weights)
            return np.exp(logs).astype(np.float32)
        return sum(weight * scores[head].astype(np.float64) for head, weight in self.weights).astype(np.float32)

    def to_text(self) -> str:
        return f"{self.kind.value}:" + ",".join(f"{head}={weight:g}" for head, weight in self.weights)
