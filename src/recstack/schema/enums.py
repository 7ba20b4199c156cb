"""Closed sets of choices a schema names by value (``side: user``, ``pooling: mean``)."""

from __future__ import annotations

from enum import Enum

__all__ = ["NumericTransform", "Pooling", "Side", "VectorFormat", "WeightFormat"]


class Side(str, Enum):
    """Which tower a feature belongs to in two-tower models."""

    USER = "user"
    ITEM = "item"
    CONTEXT = "context"


class Pooling(str, Enum):
    """How a sequence of embeddings becomes one vector."""

    MEAN = "mean"
    SUM = "sum"
    MAX = "max"
    WEIGHTED_SUM = "weighted_sum"
    WEIGHTED_MEAN = "weighted_mean"


class NumericTransform(str, Enum):
    """Normalisation of a numeric feature; on (standard) by default, as seed 003's readers found."""

    STANDARD = "standard"
    MINMAX = "minmax"
    LOG1P = "log1p"  # log1p(max(x, 0)), then standardised
    BUCKETIZE = "bucketize"  # becomes an embedded id: one row per bucket
    NONE = "none"


class WeightFormat(str, Enum):
    """Where a multi-valued feature's per-value weights come from."""

    NONE = "none"
    PAIRS = "pairs"  # "502:0.34,278:0.09"
    COLUMN = "column"  # a parallel column of weights, same delimiter / list layout


class VectorFormat(str, Enum):
    NPY = "npy"
    PARQUET = "parquet"
    WORD2VEC = "word2vec"
