"""Numeric normalisers fitted in one streaming pass: fill, standardise, min-max, log1p, buckets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recstack.schema import NumericFeature, NumericTransform

_SAMPLE_SIZE = 100_000  # reservoir for quantile boundaries: bounded memory on any data size


class NumericStats:
    """Running moments and a uniform reservoir sample of one numeric column (NaN = missing)."""

    def __init__(self, *, seed: int = 0, sample: bool = True) -> None:
        self.sample = sample  # keep the reservoir; only quantile buckets need it, and it is the slow part
        self.count = 0
        # Mean and sum of squared deviations, merged per batch (Chan et al.): a running sum of
        # squares loses the variance of values far from zero (timestamps, ids) to cancellation.
        self.mean = 0.0
        self.m2 = 0.0
        self.log_mean = 0.0
        self.log_m2 = 0.0
        self.minimum = np.inf
        self.maximum = -np.inf
        self._sample = np.empty(0)
        self._keys = np.empty(0)
        self._rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        logs = np.log1p(np.maximum(values, 0.0))
        self.mean, self.m2 = _merge_moments(self.count, self.mean, self.m2, values)
        self.log_mean, self.log_m2 = _merge_moments(self.count, self.log_mean, self.log_m2, logs)
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        if self.sample:
            self._reservoir(values)
        self.count += values.size

    def _reservoir(self, values: np.ndarray) -> None:
        # Keep each value seen so far with equal probability: give every value a random key and
        # keep the smallest keys (equivalent to reservoir sampling, vectorised per batch).
        keys = self._rng.random(values.size)
        merged_values = np.concatenate([self._sample, values])
        merged_keys = np.concatenate([self._keys, keys])
        if merged_values.size > _SAMPLE_SIZE:
            keep = np.argpartition(merged_keys, _SAMPLE_SIZE)[:_SAMPLE_SIZE]
            merged_values, merged_keys = merged_values[keep], merged_keys[keep]
        self._sample, self._keys = merged_values, merged_keys

    def merged(self, other: "NumericStats") -> "NumericStats":
        """The statistics of both streams' values together (Chan et al.'s pairwise merge of
        the moments); the reservoir is left out (bucket boundaries are never refitted
        incrementally), so the result holds no sample."""
        merged = NumericStats(sample=False)
        total = self.count + other.count
        merged.count = total
        if total:
            merged.mean, merged.m2 = _merge_pair(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
            merged.log_mean, merged.log_m2 = _merge_pair(
                self.count, self.log_mean, self.log_m2, other.count, other.log_mean, other.log_m2
            )
        merged.minimum = min(self.minimum, other.minimum)
        merged.maximum = max(self.maximum, other.maximum)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """The moments as JSON numbers (min/max null when no value was seen); no sample."""
        finite = self.count > 0
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "log_mean": self.log_mean,
            "log_m2": self.log_m2,
            "min": float(self.minimum) if finite else None,
            "max": float(self.maximum) if finite else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NumericStats":
        stats = cls(sample=False)
        stats.count = int(data["count"])
        stats.mean, stats.m2 = float(data["mean"]), float(data["m2"])
        stats.log_mean, stats.log_m2 = float(data["log_mean"]), float(data["log_m2"])
        stats.minimum = np.inf if data["min"] is None else float(data["min"])
        stats.maximum = -np.inf if data["max"] is None else float(data["max"])
        return stats

    def quantiles(self, num_buckets: int) -> list[float]:
        if self._sample.size == 0:
            return []
        edges = np.quantile(self._sample, np.linspace(0, 1, num_buckets + 1)[1:-1])
        return sorted(set(float(e) for e in edges))


@dataclass(frozen=True)
class NumericNormalizer:
    """Fitted state of one numeric feature; ``transform`` maps raw float64 values to model inputs.

    Missing values become ``fill`` before scaling; for bucketised features they get row 1.
    """

    transform_kind: NumericTransform
    fill: float
    center: float = 0.0
    scale: float = 1.0
    boundaries: tuple[float, ...] = ()

    @classmethod
    def fit(cls, feature: NumericFeature, stats: NumericStats) -> "NumericNormalizer":
        mean = stats.mean if stats.count else 0.0
        fill = feature.fill if feature.fill is not None else mean
        kind = feature.transform
        if kind is NumericTransform.STANDARD:
            var = stats.m2 / stats.count if stats.count else 1.0
            return cls(kind, fill, center=mean, scale=_safe(np.sqrt(max(var, 0.0))))
        if kind is NumericTransform.LOG1P:
            log_mean = stats.log_mean if stats.count else 0.0
            var = stats.log_m2 / stats.count if stats.count else 1.0
            return cls(kind, fill, center=log_mean, scale=_safe(np.sqrt(max(var, 0.0))))
        if kind is NumericTransform.MINMAX:
            low = stats.minimum if stats.count else 0.0
            high = stats.maximum if stats.count else 1.0
            return cls(kind, fill, center=low, scale=_safe(high - low))
        if kind is NumericTransform.BUCKETIZE:
            bounds = feature.boundaries if feature.boundaries is not None else stats.quantiles(feature.num_buckets)
            return cls(kind, fill, boundaries=tuple(float(b) for b in bounds))
        return cls(kind, fill)

    @property
    def num_buckets(self) -> int:
        """Rows of a bucketised feature's table: padding, missing, then ``len(boundaries) + 1``."""
        return 2 + len(self.boundaries) + 1

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 ``(B,)`` for scaled kinds; int64 rows for BUCKETIZE."""
        missing = np.isnan(values)
        if self.transform_kind is NumericTransform.BUCKETIZE:
            rows = np.searchsorted(np.asarray(self.boundaries), values, side="right").astype(np.int64) + 2
            rows[missing] = 1
            return rows
        filled = np.where(missing, self.fill, values)  # a new array: the steps below work in place
        if self.transform_kind is NumericTransform.LOG1P:
            np.log1p(np.maximum(filled, 0.0, out=filled), out=filled)
        if self.transform_kind is not NumericTransform.NONE:
            filled -= self.center
            filled /= self.scale
        return filled.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": self.transform_kind.value,
            "fill": self.fill,
            "center": self.center,
            "scale": self.scale,
            "boundaries": list(self.boundaries),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NumericNormalizer":
        return cls(
            NumericTransform(data["transform"]),
            float(data["fill"]),
            center=float(data["center"]),
            scale=float(data["scale"]),
            boundaries=tuple(data["boundaries"]),
        )


def _merge_moments(count: int, mean: float, m2: float, values: np.ndarray) -> tuple[float, float]:
    """Mean and squared-deviation sum of ``count`` earlier values merged with ``values``."""
    batch_mean = float(values.mean())
    batch_m2 = float(np.square(values - batch_mean).sum())
    total = count + values.size
    delta = batch_mean - mean
    return mean + delta * values.size / total, m2 + batch_m2 + delta**2 * count * values.size / total


def _merge_pair(count_a: int, mean_a: float, m2_a: float, count_b: int, mean_b: float, m2_b: float) -> tuple[float, float]:
    """Mean and squared-deviation sum of two summarised groups of values together."""
    total = count_a + count_b
    if total == 0:
        return 0.0, 0.0
    delta = mean_b - mean_a
    return mean_a + delta * count_b / total, m2_a + m2_b + delta**2 * count_a * count_b / total


def _safe(scale: float) -> float:
    return float(scale) if scale > 1e-12 else 1.0
