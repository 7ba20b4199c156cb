"""The feature schema: declared once (YAML or Python), validated at the edge, round-trips as data."""

from __future__ import annotations

import pytest

from recstack.errors import SchemaError
from recstack.schema import (
    CategoricalFeature,
    LabelKind,
    NumericFeature,
    NumericTransform,
    Pooling,
    Schema,
    SequenceFeature,
    Side,
    TableSpec,
    Target,
    VectorFeature,
    WeightFormat,
    is_embedded,
)

DIN = {
    "label": "clicked",
    "group": "user_id",
    "embedding_dim": 12,
    "tables": {"item": {"dim": 16, "min_count": 2, "max_size": 1000}, "cat": {"hash_buckets": 64}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 50, "side": "user"},
        {"name": "cats", "kind": "sequence", "table": "cat", "weights": "pairs", "pooling": "weighted_sum"},
        {"name": "age", "kind": "numeric", "transform": "bucketize", "boundaries": [18, 30, 65]},
        {"name": "price", "kind": "numeric"},
        {"name": "user_vec", "kind": "vector", "dim": 3, "columns": ["u_1", "u_2", "u_3"]},
    ],
}


def test_a_schema_from_plain_data_fills_defaults():
    schema = Schema.from_dict(DIN)
    assert schema.names == [f["name"] for f in DIN["features"]]
    assert schema["user_id"] == CategoricalFeature(name="user_id", column="user_id", table="user_id", side=Side.USER)
    assert schema.tables["user_id"] == TableSpec(name="user_id", dim=12)  # undeclared: embedding_dim
    assert schema.tables["cat"].dim == 12 and schema.tables["cat"].hash_buckets == 64
    assert schema["price"].transform is NumericTransform.STANDARD  # normalisation on by default
    assert schema["hist_item_ids"].pooling is Pooling.MEAN and schema["hist_item_ids"].delimiter == ","
    assert schema["cats"].weights is WeightFormat.PAIRS
    assert schema["age"].boundaries == (18, 30, 65)
    assert (schema.label, schema.group) == ("clicked", "user_id")


def test_features_naming_one_table_share_it():
    schema = Schema.from_dict(DIN)
    assert schema.table_of(schema["item_id"]) is schema.table_of(schema["hist_item_ids"])
    assert set(schema.tables) == {"item", "cat", "user_id"}


def test_a_schema_built_in_python_gets_the_same_defaults():
    schema = Schema(
        features=(
            CategoricalFeature(name="item_id"),
            SequenceFeature(name="hist", table="item_id", maxlen=5),
            NumericFeature(name="age"),
        )
    )
    assert schema["item_id"].column == "item_id" and schema["item_id"].table == "item_id"
    assert schema["hist"].column == "hist"
    assert schema.tables == {"item_id": TableSpec(name="item_id")}
    assert schema.columns() == ["item_id", "hist", "age", "label"]


def test_round_trip_through_plain_data_and_yaml(tmp_path):
    schema = Schema.from_dict(DIN)
    assert Schema.from_dict(schema.to_dict()) == schema
    import yaml

    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema.to_dict()))
    assert Schema.from_yaml(tmp_path / "schema.yaml") == schema


def test_yaml_resolves_pretrained_paths_next_to_the_file(tmp_path):
    (tmp_path / "schema.yaml").write_text(
        "tables:\n  item: {pretrained: vectors/items.npy, pretrained_format: npy}\n"
        "features:\n  - {name: item_id, kind: categorical, table: item}\n"
    )
    schema = Schema.from_yaml(tmp_path / "schema.yaml")
    assert schema.tables["item"].pretrained == str((tmp_path / "vectors/items.npy").resolve())


def test_columns_lists_every_column_read_once():
    schema = Schema.from_dict(
        {
            "label": "label",
            "group": "user_id",
            "features": [
                {"name": "user_id", "kind": "categorical"},
                {"name": "hist", "kind": "sequence", "weights": "column", "weight_column": "hist_w"},
                {"name": "v", "kind": "vector", "dim": 2, "columns": ["a", "b"]},
                {"name": "user_copy", "kind": "categorical", "column": "user_id"},
            ],
        }
    )
    assert schema.columns() == ["user_id", "hist", "hist_w", "a", "b", "label"]
    assert schema["hist"].source_columns == ("hist", "hist_w")


def test_which_features_are_embedded_and_by_side():
    schema = Schema.from_dict(DIN)
    assert [f.name for f in schema.embedded()] == ["user_id", "item_id", "hist_item_ids", "cats", "age"]
    assert not is_embedded(schema["price"]) and not is_embedded(schema["user_vec"])
    assert [f.name for f in schema.by_side(Side.USER)] == ["user_id", "hist_item_ids"]
    with pytest.raises(KeyError, match="no feature named"):
        schema["nope"]


def bad(change: dict) -> dict:
    features = [dict(f) for f in DIN["features"]]
    data = {**DIN, "features": features}
    for key, value in change.items():
        if key.startswith("features."):
            index, field = key.split(".")[1:]
            features[int(index)][field] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "a schema must be a mapping"),
        ({"features": []}, "non-empty list"),
        (bad({"labels": "y"}), "unknown schema key"),
        (bad({"features.0.kind": "category"}), "kind must be one of"),
        (bad({"features.0.colum": "x"}), "feature 'user_id': unknown key"),
        (bad({"features.0.side": "both"}), "side must be one of"),
        (bad({"features.5.transform": "zscore"}), "transform must be one of"),
        (bad({"features.2.maxlen": 0}), "maxlen must be >= 1"),
        (bad({"features.3.weights": "none"}), "needs weights"),
        (bad({"features.2.weights": "column"}), "needs weight_column"),
        (bad({"features.6.dim": 4}), "3 columns given for dim 4"),
        (bad({"features.4.boundaries": [30, 18]}), "boundaries must be increasing"),
        (bad({"features.4.boundaries": None, "features.4.num_buckets": 1}), "num_buckets must be >= 2"),
        (bad({"features.1.name": "user_id"}), "declared twice"),
        (bad({"tables": {"item": {"hash_buckets": 0}}}), "hash_buckets must be >= 1"),
        (bad({"tables": {"item": {"min_count": 0}}}), "min_count must be >= 1"),
        (bad({"tables": {"item": {"hash_buckets": 8, "pretrained": "v.npy"}}}), "cannot also be hashed"),
        (bad({"tables": {"item": {"size": 8}}}), "table 'item': unknown key"),
        (bad({"label": ["a"]}), "label/group must be column names"),
    ],
)
def test_invalid_schemas_are_refused_with_the_feature_and_key(data, message):
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict(data)


def test_a_vector_needs_a_positive_dim():
    with pytest.raises(SchemaError, match="dim must be >= 1"):
        Schema(features=(VectorFeature(name="v", dim=0),))


# ---- targets -----------------------------------------------------------------------------------
TWO_TARGETS = {
    "group": "user_id",
    "targets": [{"name": "click"}, {"name": "like", "kind": "binary", "weight": 0.5}, {"name": "watch_seconds", "kind": "regression"}],
    "features": [{"name": "user_id", "kind": "categorical"}, {"name": "item_id", "kind": "categorical"}],
}


def test_a_single_label_is_one_binary_target():
    schema = Schema.from_dict({"label": "clicked", "label_kind": "real", "features": [{"name": "a", "kind": "categorical"}]})
    assert [(t.name, t.kind, t.weight) for t in schema.targets] == [("clicked", LabelKind.REAL, 1.0)]
    assert (schema.label, schema.label_kind) == ("clicked", LabelKind.REAL)
    assert schema.to_dict()["label"] == "clicked" and "targets" not in schema.to_dict()  # saved as before
    assert Schema(features=(CategoricalFeature(name="a"),)).target_names == ["label"]
    assert Schema.from_dict({"label": None, "features": [{"name": "a", "kind": "categorical"}]}).targets == ()


def test_several_targets_parse_with_kind_and_weight():
    schema = Schema.from_dict(TWO_TARGETS)
    assert schema.targets == (
        Target(name="click"),
        Target(name="like", kind=LabelKind.BINARY, weight=0.5),
        Target(name="watch_seconds", kind=LabelKind.REAL),
    )
    assert schema.label is None  # several targets: read schema.targets
    assert schema.target("like").weight == 0.5
    assert schema.columns() == ["user_id", "item_id", "click", "like", "watch_seconds"]
    assert Schema.from_dict(schema.to_dict()) == schema


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": "click"}, r"targets: give either label \(one target\) or targets, not both"),
        ({"targets": []}, r"targets: expected a non-empty list"),
        ({"targets": [{"name": "click"}, {"name": "click"}]}, r"target 'click': declared twice"),
        ({"targets": [{"name": "click", "kind": "count"}]}, r"target 'click': kind must be one of \['binary', 'real', 'regression'\]"),
        ({"targets": [{"name": "click", "weight": 0}]}, r"target 'click': weight must be a finite number > 0"),
        ({"targets": [{"name": "click", "loss": "bce"}]}, r"target 'click': unknown key\(s\) \['loss'\]"),
        ({"targets": [{"kind": "binary"}]}, r"targets\[0\] must be a column name or a mapping with a 'name'"),
    ],
)
def test_bad_targets_name_the_target_and_key(change, message):
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict({**TWO_TARGETS, **change})
