"""Embedding tables and the four kinds of feature, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from recstack.schema.enums import InvalidPolicy, NumericTransform, Pooling, Side, Truncation, VectorFormat, WeightFormat

__all__ = [
    "CategoricalFeature",
    "EmbeddedFeature",
    "Feature",
    "NumericFeature",
    "SequenceFeature",
    "TableSpec",
    "VectorFeature",
    "is_embedded",
]


@dataclass(frozen=True)
class TableSpec:
    """An embedding table and its vocabulary, shared by every feature that names it.

    Row 0 is padding (a zero vector), row 1 is the out-of-vocabulary slot, rows 2.. are values.
    A pretrained table takes its vocabulary and initial rows from a vector file; ids without a
    vector map to padding (a zero row that pooling ignores), as in seed 001.
    """

    name: str
    dim: int = 16
    min_count: int = 1
    max_size: int | None = None
    hash_buckets: int | None = None
    pretrained: str | None = None
    pretrained_format: VectorFormat | None = None
    trainable: bool = True


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    column: str = ""
    table: str = ""
    side: Side = Side.CONTEXT

    kind = "categorical"

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The data columns this feature reads."""
        return (self.column,)


@dataclass(frozen=True)
class NumericFeature:
    name: str
    column: str = ""
    side: Side = Side.CONTEXT
    transform: NumericTransform = NumericTransform.STANDARD
    fill: float | None = None  # None: the training mean
    boundaries: tuple[float, ...] | None = None  # bucketize with given boundaries
    num_buckets: int = 10  # bucketize at training quantiles when no boundaries are given
    dim: int = 8  # embedding dim of a bucketised feature
    on_invalid: InvalidPolicy = InvalidPolicy.ERROR  # a NaN or +-inf value: error | fill | skip_row

    kind = "numeric"

    @property
    def table(self) -> str:
        return self.name

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The data columns this feature reads."""
        return (self.column,)


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length list: a delimited string (``"3,7,9"``) or a list column."""

    name: str
    column: str = ""
    table: str = ""
    side: Side = Side.CONTEXT
    maxlen: int = 50  # longer lists are truncated (counted, and warned about once per run)
    truncate: Truncation = Truncation.RECENT  # which maxlen values a longer list keeps
    delimiter: str = ","
    weights: WeightFormat = WeightFormat.NONE
    weight_column: str | None = None
    pair_separator: str = ":"
    pooling: Pooling = Pooling.MEAN
    on_invalid: InvalidPolicy = InvalidPolicy.ERROR  # a NaN or +-inf weight: error | fill (0) | skip_row

    kind = "sequence"

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The data columns this feature reads: the list, and its weights' column if weighted by one."""
        if self.weights is WeightFormat.COLUMN:
            return (self.column, self.weight_column or "")
        return (self.column,)


@dataclass(frozen=True)
class VectorFeature:
    """A dense vector: several float columns, or one list<float> / delimited string column."""

    name: str
    dim: int
    columns: tuple[str, ...] = ()
    column: str = ""
    delimiter: str = " "
    side: Side = Side.CONTEXT
    on_invalid: InvalidPolicy = InvalidPolicy.ERROR  # a NaN or +-inf element: error | fill (0) | skip_row

    kind = "vector"

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The data columns this feature reads: its float columns, or its one list column."""
        return self.columns or (self.column,)


Feature = Union[CategoricalFeature, NumericFeature, SequenceFeature, VectorFeature]
EmbeddedFeature = Union[CategoricalFeature, SequenceFeature, NumericFeature]


def is_embedded(feature: Feature) -> bool:
    """True when the feature is looked up in an embedding table."""
    if isinstance(feature, NumericFeature):
        return feature.transform is NumericTransform.BUCKETIZE
    return isinstance(feature, (CategoricalFeature, SequenceFeature))

