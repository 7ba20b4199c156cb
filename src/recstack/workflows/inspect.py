"""``recstack data``: validate a file against a schema and summarise every feature."""

from __future__ import annotations

import numpy as np
import torch

from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.data.vocabulary import HashBuckets
from recstack.schema import CategoricalFeature, NumericFeature, NumericTransform, Schema, SequenceFeature, VectorFeature
from recstack.schema.enums import InvalidPolicy, LabelKind, WeightFormat


def inspect_data(schema: Schema, source: DataSource, *, max_rows: int | None = None) -> str:
    """Fits a preprocessor on ``source`` (raising DataError on bad input: unparseable or NaN/inf
    numbers under ``on_invalid: error``, labels that are not 0/1 for ``label_kind: binary``) and
    reports per feature, counting over one pass: NaN/inf values filled or rows skipped, and
    sequence rows truncated to ``maxlen``."""
    preprocessor = Preprocessor(schema).fit(source)
    # The counters also hold the fitting pass; the report counts the pass below.
    skipped_before = preprocessor.skipped_rows
    invalid_before = dict(preprocessor.invalid_values)
    truncated_before = dict(preprocessor.truncated_rows)
    stream = BatchStream(source=source, preprocessor=preprocessor, config=LoaderConfig(batch_size=65_536), rank=0, world_size=1)
    rows = 0
    oov: dict[str, int] = {}
    lengths: dict[str, list[np.ndarray]] = {}
    dense: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    for batch in stream:
        rows += len(batch)
        for name, ids in batch.ids.items():
            oov[name] = oov.get(name, 0) + int(ids.eq(1).sum())
        for name in batch.sequences:
            lengths.setdefault(name, []).append(batch.mask(name).sum(1).numpy())
        for name, values in batch.dense.items():
            dense.setdefault(name, []).append(values.numpy())
        if batch.label is not None:
            labels.append(batch.label.numpy())
        if max_rows is not None and rows >= max_rows:
            break
    skipped = preprocessor.skipped_rows - skipped_before
    invalid = {n: c - invalid_before.get(n, 0) for n, c in preprocessor.invalid_values.items()}
    truncated = {n: c - truncated_before.get(n, 0) for n, c in preprocessor.truncated_rows.items()}
    lines = [f"rows: {rows}" + (f" (skipped rows: {skipped})" if skipped else "")]
    if labels:
        label = np.concatenate(labels)
        if schema.label_kind is LabelKind.BINARY:
            lines.append(f"label {schema.label!r}: positive rate {label.mean():.4f}")
        else:
            lines.append(f"label {schema.label!r}: mean {label.mean():.4f} min {label.min(initial=0):.4g} max {label.max(initial=0):.4g}")
    lines.append(f"{'feature':28} {'kind':12} {'side':8} summary")
    for feature in schema.features:
        if isinstance(feature, CategoricalFeature):
            lookup = preprocessor.lookups[feature.table]
            size = f"{lookup.buckets} hash buckets" if isinstance(lookup, HashBuckets) else f"vocabulary {len(lookup.keys)} (table {feature.table!r})"
            summary = f"{size}; OOV/missing rows {oov.get(feature.name, 0)}"
        elif isinstance(feature, SequenceFeature):
            length = np.concatenate(lengths[feature.name]) if lengths.get(feature.name) else np.zeros(0)
            summary = (
                f"length mean {length.mean():.2f} max {int(length.max(initial=0))}; truncated to maxlen {feature.maxlen} "
                f"(keeping {feature.truncate.value}): {truncated.get(feature.name, 0)} rows; table {feature.table!r}"
            )
        elif isinstance(feature, NumericFeature) and feature.transform is NumericTransform.BUCKETIZE:
            normalizer = preprocessor.normalizers[feature.name]
            summary = f"{len(normalizer.boundaries) + 1} buckets, boundaries {[round(b, 4) for b in normalizer.boundaries]}; missing {oov.get(feature.name, 0)}"
        elif isinstance(feature, NumericFeature):
            normalizer = preprocessor.normalizers[feature.name]
            values = np.concatenate(dense[feature.name])
            summary = (
                f"{feature.transform.value}: center {normalizer.center:.4g} scale {normalizer.scale:.4g}; "
                f"fill {normalizer.fill:.4g}; normalised mean {values.mean():.3f} std {values.std():.3f}"
            )
        else:
            assert isinstance(feature, VectorFeature)
            values = np.concatenate(dense[feature.name])
            norms = np.linalg.norm(values, axis=1)
            summary = f"dim {feature.dim}; L2 norm mean {norms.mean():.4f}; zero rows {(norms == 0).sum()}"
        summary += _invalid_summary(feature, invalid.get(feature.name, 0))
        lines.append(f"{feature.name:28} {feature.kind:12} {feature.side.value:8} {summary}")
    return "\n".join(lines)


def _invalid_summary(feature: object, count: int) -> str:
    """``; NaN/inf: ...`` for features that read numbers (values, vector elements, weights)."""
    policy = getattr(feature, "on_invalid", None)
    if policy is None or isinstance(feature, SequenceFeature) and feature.weights is WeightFormat.NONE:
        return ""
    if policy is InvalidPolicy.SKIP_ROW:
        return f"; NaN/inf: {count} rows skipped"
    if policy is InvalidPolicy.FILL:
        return f"; NaN/inf: {count} values filled"
    return "; NaN/inf: none (on_invalid: error)"
