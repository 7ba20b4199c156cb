"""Which features a model embeds and which it reads as they are.

A model's inputs fall into two kinds:

- **embedded**: looked up in a table: categorical ids ``(B,)``, bucketised numerics ``(B,)``
  and sequences ``(B, L)`` (pooled to one vector per row, or attended over by DIN);
- **dense**: fed as they are: normalised numeric scalars ``(B,)`` and vectors ``(B, D)``.

Example:
    >>> from recstack.schema import Schema
    >>> from recstack.data.feature_map import FeatureMap
    >>> schema = Schema.from_dict({"features": [
    ...     {"name": "item_id", "kind": "categorical"},
    ...     {"name": "age", "kind": "numeric"}]})
    >>> split_features(FeatureMap(schema=schema, tables={}))
    FeatureSplit(embedded=('item_id',), dense=('age',))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recstack.data.feature_map import FeatureMap
from recstack.schema import is_embedded


@dataclass(frozen=True)
class FeatureSplit:
    """Feature names by kind, in schema (or requested) order."""

    embedded: tuple[str, ...]  # categorical, bucketised numeric, sequence
    dense: tuple[str, ...]  # numeric scalars and vectors

    @property
    def all(self) -> tuple[str, ...]:
        return self.embedded + self.dense


def split_features(
    feature_map: FeatureMap, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
) -> FeatureSplit:
    """Split ``names`` (default: every feature of the schema) into embedded and dense.

    Args:
        feature_map: the fitted feature map.
        names: the features to use; None means all of them.
        exclude: names to leave out (for example the behaviour features DIN attends over).

    Raises:
        KeyError: a name is not a feature of the schema.
    """
    features = feature_map.select(list(names) if names is not None else None)
    features = [f for f in features if f.name not in set(exclude)]
    return FeatureSplit(
        embedded=tuple(f.name for f in features if is_embedded(f)),
        dense=tuple(f.name for f in features if not is_embedded(f)),
    )

