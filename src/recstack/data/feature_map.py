"""The fitted contract between preprocessing and models: the schema plus every table's size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from recstack.schema import (
    CategoricalFeature,
    Feature,
    NumericFeature,
    NumericTransform,
    SequenceFeature,
    Schema,
    Side,
    VectorFeature,
    VectorFormat,
)


@dataclass(frozen=True)
class TableInfo:
    """A fitted embedding table: rows include padding (0) and OOV (1)."""

    name: str
    num_rows: int
    dim: int
    pretrained: str | None = None
    pretrained_format: VectorFormat | None = None
    trainable: bool = True


@dataclass(frozen=True)
class FeatureMap:
    """What a model needs to build itself: features, tables and dense widths."""

    schema: Schema
    tables: dict[str, TableInfo]

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.schema.features

    def select(self, names: list[str] | None = None, side: Side | None = None) -> list[Feature]:
        features = list(self.schema.features)
        if names is not None:
            unknown = [n for n in names if n not in self.schema.names]
            if unknown:
                raise KeyError(f"unknown feature(s) {unknown}; features: {self.schema.names}")
            features = [self.schema[n] for n in names]
        if side is not None:
            features = [f for f in features if f.side is side]
        return features

    def table_of(self, feature: Feature) -> TableInfo:
        return self.tables[table_name(feature)]

    def dense_width(self, feature: Feature) -> int:
        """Width of a non-embedded feature in the model input (1 for a scalar, dim for a vector)."""
        if isinstance(feature, VectorFeature):
            return feature.dim
        return 1

    def without_pretrained_files(self) -> "FeatureMap":
        """The same map with pretrained tables built empty: their rows come from saved weights."""
        tables = {name: dataclasses.replace(t, pretrained=None) for name, t in self.tables.items()}
        return FeatureMap(schema=self.schema, tables=tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {
                "num_rows": t.num_rows,
                "dim": t.dim,
                "pretrained": t.pretrained,
                "pretrained_format": t.pretrained_format.value if t.pretrained_format else None,
                "trainable": t.trainable,
            }
            for name, t in self.tables.items()
        }


def table_name(feature: Feature) -> str:
    if isinstance(feature, (CategoricalFeature, SequenceFeature)):
        return feature.table
    if isinstance(feature, NumericFeature) and feature.transform is NumericTransform.BUCKETIZE:
        return feature.name
    raise ValueError(f"feature {feature.name!r} has no embedding table")
