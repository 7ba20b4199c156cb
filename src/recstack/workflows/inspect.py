"""``recstack data``: validate a file against a schema and summarise every feature."""

from __future__ import annotations

import numpy as np
import torch

from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.data.vocabulary import HashBuckets
from recstack.schema import CategoricalFeature, NumericFeature, NumericTransform, Schema, SequenceFeature, VectorFeature


def inspect_data(schema: Schema, source: DataSource, *, max_rows: int | None = None) -> str:
    """Fits a preprocessor on ``source`` (raising DataError on bad input) and reports per feature."""
    preprocessor = Preprocessor(schema).fit(source)
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
    lines = [f"rows: {rows}" + (f" (skipped bad rows: {preprocessor.skipped_rows})" if getattr(preprocessor, "skipped_rows", 0) else "")]
    if labels:
        label = np.concatenate(labels)
        lines.append(f"label {schema.label!r}: positive rate {label.mean():.4f}")
    lines.append(f"{'feature':28} {'kind':12} {'side':8} summary")
    for feature in schema.features:
        if isinstance(feature, CategoricalFeature):
            lookup = preprocessor.lookups[feature.table]
            size = f"{lookup.buckets} hash buckets" if isinstance(lookup, HashBuckets) else f"vocabulary {len(lookup.keys)} (table {feature.table!r})"
            summary = f"{size}; OOV/missing rows {oov.get(feature.name, 0)}"
        elif isinstance(feature, SequenceFeature):
            length = np.concatenate(lengths[feature.name]) if lengths.get(feature.name) else np.zeros(0)
            summary = (
                f"length mean {length.mean():.2f} max {int(length.max(initial=0))}; at maxlen {feature.maxlen}: "
                f"{(length >= feature.maxlen).mean() * 100:.1f}% rows; table {feature.table!r}"
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
        lines.append(f"{feature.name:28} {feature.kind:12} {feature.side.value:8} {summary}")
    return "\n".join(lines)
