"""Closed sets of choices a schema names by value (``side: user``, ``pooling: mean``)."""

from __future__ import annotations

from enum import Enum

__all__ = ["InvalidPolicy", "LabelKind", "NumericTransform", "Pooling", "Side", "Truncation", "VectorFormat", "WeightFormat"]


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
    JSONL = "jsonl"  # {"id": ..., "vector": [...]} per line


class InvalidPolicy(str, Enum):
    """What a numeric value that is NaN or +-inf does (a missing value, null or empty, is not one:
    it gets the feature's fill)."""

    ERROR = "error"  # DataError naming the file, row, column and the kind of value (NaN, inf)
    FILL = "fill"  # treated as missing: the feature's fill (declared or the training mean)
    SKIP_ROW = "skip_row"  # the row is dropped and counted with the other skipped rows


class Truncation(str, Enum):
    """Which values a list longer than its feature's ``maxlen`` keeps."""

    RECENT = "recent"  # the last maxlen values (lists are oldest first)
    FIRST = "first"  # the first maxlen values


class LabelKind(str, Enum):
    """What a label (target) column holds; checked as each file is read."""

    BINARY = "binary"  # 0 or 1 (every ranking and pointwise task)
    REAL = "real"  # any finite number (a retrieval row weight, a regression target)

    @classmethod
    def _missing_(cls, value: object) -> "LabelKind | None":
        return cls.REAL if value == "regression" else None  # a target's kind may say "regression"
