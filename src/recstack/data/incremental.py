"""Refitting a fitted preprocessor on new data without moving a single old row (incremental
training, ``recstack train --init-from RUN``).

``Preprocessor(schema).fit(new_data, parent=old)`` counts and measures ``new_data`` as any fit
does, then grows ``old`` with it:

- **vocabularies**: every value of the parent keeps its row; values of the new data that reach
  the table's ``min_count`` *in the new data* and are not yet known get rows appended, most
  frequent first (``max_size`` caps the grown size; known values are never dropped);
- **pretrained tables**: the parent's ids keep their rows; ids of the (possibly newer) vector
  file that the parent lacks are appended, in file order;
- **hashed tables** and **bucket boundaries**: unchanged (a row's meaning is fixed by its hash or
  its boundaries);
- **numeric normalisers**: by ``numeric`` (:class:`NumericUpdate`): ``keep`` the parent's (the
  default: an old row transforms exactly as before, so the parent's predictions are kept), or
  ``update`` them to the moments of every row fitted so far (the parent's and the new data's,
  merged as though fitted in one pass; the fill is the merged mean when the schema sets none).

The running moments are kept either way, so a later ``update`` covers every row since the first
run. A schema change that cannot be grown is a :class:`~recstack.errors.ConfigError` naming the
feature, raised before the data is read (:func:`check_growable`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from recstack.data.numeric import NumericNormalizer
from recstack.data.vocabulary import HashBuckets, Vocabulary
from recstack.errors import ConfigError
from recstack.schema import (
    CategoricalFeature,
    Feature,
    NumericFeature,
    NumericTransform,
    Schema,
    SequenceFeature,
    VectorFeature,
)

if TYPE_CHECKING:
    from recstack.data.preprocessor import Preprocessor

__all__ = ["NumericUpdate", "check_growable", "check_numeric_stats", "grow_from"]

_RETRAIN = "train from scratch (without --init-from) to change it"


class NumericUpdate(str, enum.Enum):
    """How an incremental refit treats the parent's numeric normalisers."""

    KEEP = "keep"  # the parent's centre, scale and fill, unchanged
    UPDATE = "update"  # refitted on the merged moments of the parent's and the new rows


def check_growable(parent: Schema, schema: Schema) -> None:
    """Raise a ConfigError naming the first feature whose change stops ``schema`` from growing
    a model trained on ``parent``: a feature added or removed, its kind, table, table dim,
    hashing or pretrained source, numeric transform or buckets, or vector width changed."""
    old = {f.name: f for f in parent.features}
    new = {f.name: f for f in schema.features}
    for name in old:
        if name not in new:
            raise ConfigError(f"feature {name!r}: in the parent run's schema but not in this one; a model cannot drop a feature incrementally; {_RETRAIN}")
    for name, feature in new.items():
        if name not in old:
            raise ConfigError(
                f"feature {name!r}: not in the parent run's schema; a new feature changes the model's layers, "
                f"so it cannot be grown from the parent; {_RETRAIN}"
            )
        _check_feature(old[name], feature, parent, schema)


def _check_feature(old: Feature, new: Feature, parent: Schema, schema: Schema) -> None:
    name = new.name
    if type(old) is not type(new):
        raise ConfigError(f"feature {name!r}: kind changed from {old.kind!r} in the parent run to {new.kind!r}; {_RETRAIN}")
    if isinstance(new, (CategoricalFeature, SequenceFeature)):
        assert isinstance(old, (CategoricalFeature, SequenceFeature))
        if old.table != new.table:
            raise ConfigError(f"feature {name!r}: table changed from {old.table!r} in the parent run to {new.table!r}; {_RETRAIN}")
        before, after = parent.tables[old.table], schema.tables[new.table]
        where = f"feature {name!r} (table {new.table!r})"
        if bool(before.pretrained) != bool(after.pretrained):
            now = "pretrained" if after.pretrained else "learned from scratch"
            raise ConfigError(f"{where}: now {now}, unlike in the parent run; {_RETRAIN}")
        if before.hash_buckets != after.hash_buckets:
            raise ConfigError(f"{where}: hash_buckets changed from {before.hash_buckets} in the parent run to {after.hash_buckets}; {_RETRAIN}")
        if not after.pretrained and before.dim != after.dim:
            raise ConfigError(f"{where}: dim changed from {before.dim} in the parent run to {after.dim}; an embedding's width cannot grow; {_RETRAIN}")
    elif isinstance(new, NumericFeature):
        assert isinstance(old, NumericFeature)
        if old.transform is not new.transform:
            raise ConfigError(
                f"feature {name!r}: transform changed from {old.transform.value!r} in the parent run to {new.transform.value!r}; {_RETRAIN}"
            )
        if new.transform is NumericTransform.BUCKETIZE:
            for key in ("boundaries", "num_buckets", "dim"):
                if getattr(old, key) != getattr(new, key):
                    raise ConfigError(
                        f"feature {name!r}: bucketize {key} changed from {getattr(old, key)} in the parent run to "
                        f"{getattr(new, key)}; a bucket's row keeps its meaning; {_RETRAIN}"
                    )
    elif isinstance(new, VectorFeature):
        assert isinstance(old, VectorFeature)
        if old.dim != new.dim:
            raise ConfigError(f"feature {name!r}: vector dim changed from {old.dim} in the parent run to {new.dim}; {_RETRAIN}")


def check_numeric_stats(parent: "Preprocessor", numeric: NumericUpdate) -> None:
    """``update`` needs the parent's moments (runs fitted before they were saved lack them)."""
    if numeric is not NumericUpdate.UPDATE:
        return
    for feature in parent.schema.features:
        if isinstance(feature, NumericFeature) and feature.transform is not NumericTransform.BUCKETIZE:
            if feature.name not in parent.numeric_stats:
                raise ConfigError(
                    f"feature {feature.name!r}: the parent run's preprocessor.json holds no numeric statistics "
                    "(written by an older recstack); numeric: update needs them, use numeric: keep"
                )


def grow_from(child: "Preprocessor", parent: "Preprocessor", numeric: NumericUpdate) -> None:
    """Turn ``child``, just fitted on the new data alone, into ``parent`` grown by that data
    (see the module docstring); ``check_growable`` has passed."""
    for name, lookup in list(child.lookups.items()):
        before = parent.lookups[name]
        if isinstance(lookup, HashBuckets):
            child.lookups[name] = before
            continue
        assert isinstance(lookup, Vocabulary) and isinstance(before, Vocabulary)
        spec = child.schema.tables[name]
        if spec.pretrained and child.table_dims[name] != parent.table_dims[name]:
            raise ConfigError(
                f"table {name!r}: vector file {spec.pretrained!r} holds {child.table_dims[name]}-d vectors, "
                f"the parent run's table {parent.table_dims[name]}-d; {_RETRAIN}"
            )
        child.lookups[name] = before.grown(lookup.keys, max_size=None if spec.pretrained else spec.max_size)
    for feature in child.schema.features:
        if not isinstance(feature, NumericFeature):
            continue
        fresh, kept = child.numeric_stats.get(feature.name), parent.numeric_stats.get(feature.name)
        merged = kept.merged(fresh) if kept is not None and fresh is not None else None
        if feature.transform is NumericTransform.BUCKETIZE or numeric is NumericUpdate.KEEP or merged is None:
            child.normalizers[feature.name] = parent.normalizers[feature.name]
        else:
            child.normalizers[feature.name] = NumericNormalizer.fit(feature, merged)
        if merged is not None:
            child.numeric_stats[feature.name] = merged
        else:  # the parent's moments are unknown: recording the new rows' alone would mislead a later update
            child.numeric_stats.pop(feature.name, None)
