"""The :class:`Schema`: features and tables, parsed from plain data (YAML) and validated once.

Parsing happens at the edge: :meth:`Schema.from_dict` turns strings into enums and lists into
tuples, and every error names the feature or table and the key at fault.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from recstack.errors import SchemaError
from recstack.schema.enums import (
    InvalidPolicy,
    LabelKind,
    NumericTransform,
    Pooling,
    Side,
    Truncation,
    VectorFormat,
    WeightFormat,
)
from recstack.schema.specs import (
    CategoricalFeature,
    Feature,
    NumericFeature,
    SequenceFeature,
    TableSpec,
    VectorFeature,
    is_embedded,
)
from recstack.schema.targets import Target

__all__ = ["Schema"]

_FEATURE_CLASSES: dict[str, type] = {
    "categorical": CategoricalFeature,
    "numeric": NumericFeature,
    "sequence": SequenceFeature,
    "vector": VectorFeature,
}
_ENUM_FIELDS: dict[str, type[Enum]] = {
    "side": Side,
    "pooling": Pooling,
    "transform": NumericTransform,
    "weights": WeightFormat,
    "pretrained_format": VectorFormat,
    "on_invalid": InvalidPolicy,
    "truncate": Truncation,
}


@dataclass(frozen=True)
class Schema:
    """Features, their tables, the targets (label columns and what they hold) and the group
    column used by GAUC.

    ``targets`` are what a model is trained to predict. A single-target schema may say just
    ``label`` (and ``label_kind``): it becomes one target, and ``label`` / ``label_kind`` keep
    naming it. With several targets ``label`` is None (read ``targets``); given ``targets``,
    ``label`` and ``label_kind`` are derived from them.
    """

    features: tuple[Feature, ...]
    tables: Mapping[str, TableSpec] = field(default_factory=dict)
    label: str | None = "label"
    group: str | None = None
    label_kind: LabelKind = LabelKind.BINARY
    targets: tuple[Target, ...] = ()

    def __post_init__(self) -> None:
        targets = tuple(t if isinstance(t, Target) else Target.from_dict(t, index=i) for i, t in enumerate(self.targets))
        if not targets and self.label is not None:
            if not isinstance(self.label, str):
                raise SchemaError(f"label/group must be column names, got {self.label!r}")
            targets = (Target(name=self.label, kind=_enum(LabelKind, self.label_kind, "label_kind")),)
        object.__setattr__(self, "targets", targets)
        if len(targets) == 1:  # label / label_kind name the one target
            object.__setattr__(self, "label", targets[0].name)
            object.__setattr__(self, "label_kind", targets[0].kind)
        elif targets:
            object.__setattr__(self, "label", None)
            object.__setattr__(self, "label_kind", LabelKind.BINARY)
        # Built in Python (not from_dict), a feature's column and table default to its name and
        # undeclared tables get the default dim, exactly as from_dict fills them.
        features = tuple(_with_defaults(f) for f in self.features)
        tables = dict(self.tables)
        for feature in features:
            if isinstance(feature, (CategoricalFeature, SequenceFeature)) and feature.table not in tables:
                tables[feature.table] = TableSpec(name=feature.table)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "label_kind", _enum(LabelKind, self.label_kind, "label_kind"))
        _validate(self)

    def __getitem__(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"no feature named {name!r}; features: {[f.name for f in self.features]}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def target_names(self) -> list[str]:
        """The targets' columns, in order (the keys of ``Batch.labels``)."""
        return [t.name for t in self.targets]

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(f"no target named {name!r}; targets: {self.target_names}")

    def by_side(self, side: Side) -> list[Feature]:
        return [f for f in self.features if f.side is side]

    def embedded(self) -> list[Feature]:
        return [f for f in self.features if is_embedded(f)]

    def columns(self) -> list[str]:
        """Every data column the schema reads (features, targets, group), without duplicates."""
        cols: list[str] = []
        for feature in self.features:
            cols.extend(feature.source_columns)
        cols.extend(self.target_names)
        cols.extend(c for c in (self.group,) if c)
        return list(dict.fromkeys(cols))

    def feature_columns(self, names: Sequence[str]) -> list[str]:
        """The data columns the features ``names`` read, in order, without duplicates."""
        return list(dict.fromkeys(column for name in names for column in self[name].source_columns))

    def table_of(self, feature: Feature) -> TableSpec:
        return self.tables[feature.table]

    # ---- YAML / dict round trip -------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "Schema":
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise SchemaError(f"schema file not found: {path}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise SchemaError(f"{path}: not a valid YAML schema: {' '.join(str(error).split())}") from None
        try:
            return cls.from_dict(data, base_dir=Path(path).parent)
        except SchemaError as error:
            raise SchemaError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> "Schema":
        """Builds a schema from plain data (parsed YAML); errors name the feature and key."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"a schema must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"features", "tables", "label", "label_kind", "targets", "group", "embedding_dim"}
        if unknown:
            raise SchemaError(f"unknown schema key(s) {sorted(unknown)}")
        targets: tuple[Target, ...] = ()
        if "targets" in data:
            both = sorted({"label", "label_kind"} & set(data))
            if both:
                raise SchemaError(f"targets: give either label (one target) or targets, not both (the schema also has {both})")
            raw_targets = data["targets"]
            if not isinstance(raw_targets, list) or not raw_targets:
                raise SchemaError("targets: expected a non-empty list of targets ({name, kind, weight})")
            targets = tuple(Target.from_dict(raw, index=i) for i, raw in enumerate(raw_targets))
        default_dim = data.get("embedding_dim", 16)
        raw_features = data.get("features")
        if not raw_features or not isinstance(raw_features, list):
            raise SchemaError("schema.features must be a non-empty list")
        tables: dict[str, TableSpec] = {}
        for name, raw in (data.get("tables") or {}).items():
            raw = dict(raw or {})
            raw.setdefault("dim", default_dim)
            if raw.get("pretrained") and base_dir is not None:
                raw["pretrained"] = str((base_dir / raw["pretrained"]).resolve())
            tables[name] = _build(TableSpec, {"name": name, **raw}, f"table {name!r}")
        features = []
        for index, raw in enumerate(raw_features):
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise SchemaError(f"features[{index}] must be a mapping with a 'name'")
            kind = raw.get("kind")
            if kind not in _FEATURE_CLASSES:
                raise SchemaError(
                    f"feature {raw['name']!r}: kind must be one of {sorted(_FEATURE_CLASSES)}, got {kind!r}"
                )
            body = {k: v for k, v in raw.items() if k not in ("kind", "dim") or kind in ("vector", "numeric") and k == "dim"}
            table_dim = raw.get("dim")
            feature = _build(_FEATURE_CLASSES[kind], body, f"feature {raw['name']!r}")
            feature = _with_defaults(feature)
            if kind in ("categorical", "sequence") and feature.table not in tables:
                tables[feature.table] = TableSpec(name=feature.table, dim=table_dim or default_dim)
            features.append(feature)
        return cls(
            features=tuple(features),
            tables=tables,
            label=None if targets else data.get("label", "label"),
            group=data.get("group"),
            label_kind=_enum(LabelKind, data.get("label_kind") or LabelKind.BINARY, "label_kind"),
            targets=targets,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data :meth:`from_dict` reads back; one target of weight 1 is written as
        ``label`` / ``label_kind``, as older recstack wrote (and reads) it."""
        body = {
            "group": self.group,
            "tables": {name: _plain(spec, skip=("name",)) for name, spec in self.tables.items()},
            "features": [{"kind": f.kind, **_plain(f)} for f in self.features],
        }
        if len(self.targets) > 1 or any(t.weight != 1.0 for t in self.targets):
            return {"targets": [t.to_dict() for t in self.targets], **body}
        return {"label": self.label, "group": self.group, "label_kind": self.label_kind.value, **body}


def _with_defaults(feature: Feature) -> Feature:
    updates: dict[str, Any] = {}
    if not getattr(feature, "column", "x") and not getattr(feature, "columns", ()):
        updates["column"] = feature.name
    if isinstance(feature, (CategoricalFeature, SequenceFeature)) and not feature.table:
        updates["table"] = feature.name
    for key, enum_cls in (("on_invalid", InvalidPolicy), ("truncate", Truncation)):
        value = getattr(feature, key, None)
        if hasattr(feature, key) and not isinstance(value, enum_cls):  # built in Python with a string
            updates[key] = _enum(enum_cls, value, f"feature {feature.name!r}: {key}")
    return dataclasses.replace(feature, **updates) if updates else feature


def _enum(enum_cls: type[Enum], value: Any, where: str) -> Any:
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = [m.value for m in enum_cls]
        raise SchemaError(f"{where} must be one of {allowed}, got {value!r}") from None


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names - {'name'})}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _ENUM_FIELDS and value is not None and not isinstance(value, Enum):
            value = _enum(_ENUM_FIELDS[key], value, f"{where}: {key}")
        elif key in ("columns", "boundaries") and value is not None:
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise SchemaError(f"{where}: {error}") from None


def _plain(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _validate(schema: Schema) -> None:
    seen: set[str] = set()
    for feature in schema.features:
        where = f"feature {feature.name!r}"
        if feature.name in seen:
            raise SchemaError(f"{where}: declared twice")
        seen.add(feature.name)
        if isinstance(feature, (CategoricalFeature, SequenceFeature)) and feature.table not in schema.tables:
            raise SchemaError(f"{where}: table {feature.table!r} is not declared")
        if isinstance(feature, SequenceFeature):
            if feature.maxlen < 1:
                raise SchemaError(f"{where}: maxlen must be >= 1, got {feature.maxlen}")
            if feature.weights is WeightFormat.NONE and feature.on_invalid is not InvalidPolicy.ERROR:
                raise SchemaError(f"{where}: on_invalid applies to a sequence's weights, and it has none (weights: none)")
            if feature.weights is WeightFormat.COLUMN and not feature.weight_column:
                raise SchemaError(f"{where}: weights 'column' needs weight_column")
            weighted_pooling = feature.pooling in (Pooling.WEIGHTED_SUM, Pooling.WEIGHTED_MEAN)
            if weighted_pooling and feature.weights is WeightFormat.NONE:
                raise SchemaError(f"{where}: pooling {feature.pooling.value!r} needs weights ('pairs' or 'column')")
        if isinstance(feature, VectorFeature):
            if feature.dim < 1:
                raise SchemaError(f"{where}: dim must be >= 1")
            if feature.columns and len(feature.columns) != feature.dim:
                raise SchemaError(f"{where}: {len(feature.columns)} columns given for dim {feature.dim}")
        if isinstance(feature, NumericFeature) and feature.transform is NumericTransform.BUCKETIZE:
            if feature.boundaries is not None and list(feature.boundaries) != sorted(feature.boundaries):
                raise SchemaError(f"{where}: boundaries must be increasing")
            if feature.boundaries is None and feature.num_buckets < 2:
                raise SchemaError(f"{where}: num_buckets must be >= 2")
    for name, table in schema.tables.items():
        where = f"table {name!r}"
        if table.dim < 1 and not table.pretrained:
            raise SchemaError(f"{where}: dim must be >= 1")
        if table.hash_buckets is not None and table.hash_buckets < 1:
            raise SchemaError(f"{where}: hash_buckets must be >= 1")
        if table.hash_buckets is not None and table.pretrained:
            raise SchemaError(f"{where}: a pretrained table cannot also be hashed")
        if table.min_count < 1:
            raise SchemaError(f"{where}: min_count must be >= 1")
    for column in (schema.label, schema.group):
        if column is not None and not isinstance(column, str):
            raise SchemaError(f"label/group must be column names, got {column!r}")
    names = schema.target_names
    for name in names:
        if names.count(name) > 1:
            raise SchemaError(f"target {name!r}: declared twice")
    for target in schema.targets:  # a condition names a declared binary target that has none itself
        if target.condition is None:
            continue
        if target.condition not in names:
            raise SchemaError(f"target {target.name!r}: condition {target.condition!r} is not a target (targets: {', '.join(names)})")
        given = schema.target(target.condition)
        if given.kind is not LabelKind.BINARY or given.condition is not None:
            raise SchemaError(f"target {target.name!r}: condition {given.name!r} must be a binary target without a condition of its own")
