"""Feature schema: what each column is, declared once in YAML or Python.

A schema lists features and the embedding tables they use. Features that name the same
table share one vocabulary and one embedding matrix (``item_id`` and ``hist_item_ids``;
seed 001's ``follow_topic_id`` and ``all_topic_fav_7`` sharing ``topic_id``'s table)::

    schema = Schema.from_dict({
        "label": "label",
        "tables": {"item": {"dim": 16}},
        "features": [
            {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
            {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 50},
            {"name": "age", "kind": "numeric", "transform": "standard", "side": "user"},
        ],
    })

The package is laid out bottom-up: :mod:`~recstack.schema.enums` (closed sets of choices),
:mod:`~recstack.schema.specs` (tables and features), :mod:`~recstack.schema.schema` (the
:class:`Schema`, its parsing and validation). Import from ``recstack.schema``.
"""

from recstack.schema.enums import InvalidPolicy, LabelKind, NumericTransform, Pooling, Side, Truncation, VectorFormat, WeightFormat
from recstack.schema.schema import Schema
from recstack.schema.targets import Target
from recstack.schema.specs import (
    CategoricalFeature,
    EmbeddedFeature,
    Feature,
    NumericFeature,
    SequenceFeature,
    TableSpec,
    VectorFeature,
    is_embedded,
)

__all__ = [
    "CategoricalFeature",
    "EmbeddedFeature",
    "Feature",
    "InvalidPolicy",
    "LabelKind",
    "NumericFeature",
    "NumericTransform",
    "Pooling",
    "Schema",
    "SequenceFeature",
    "Side",
    "TableSpec",
    "Target",
    "Truncation",
    "VectorFeature",
    "VectorFormat",
    "WeightFormat",
    "is_embedded",
]
