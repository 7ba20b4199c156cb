"""Targets: names, kinds, weights and conditions in the schema; label errors name the target and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk, DataSource
from recstack.errors import DataError, SchemaError
from recstack.schema import Schema
from recstack.schema.enums import LabelKind

from .helpers import SCHEMA, records


def test_targets_parse_with_kind_weight_and_condition_and_round_trip() -> None:
    schema = Schema.from_dict({**SCHEMA, "targets": [{"name": "click"}, {"name": "like", "weight": 0.5, "condition": "click"}, {"name": "secs", "kind": "regression"}]})
    click, like, secs = schema.targets
    assert schema.target_names == ["click", "like", "secs"] and schema.label is None
    assert like.condition == "click" and like.weight == 0.5 and click.condition is None
    assert secs.kind is LabelKind.REAL
    assert Schema.from_dict(schema.to_dict()).targets == schema.targets


def test_single_label_schemas_are_unchanged() -> None:
    schema = Schema.from_dict({"label": "label", "features": SCHEMA["features"]})
    assert schema.label == "label" and [t.to_dict() for t in schema.targets] == [{"name": "label", "kind": "binary", "weight": 1.0}]
    assert "targets" not in schema.to_dict()


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([{"name": "click"}, {"name": "like", "condition": "buy"}], "target 'like': condition 'buy' is not a target"),
        ([{"name": "like", "condition": "like"}], "condition cannot be the target itself"),
        ([{"name": "secs", "kind": "regression"}, {"name": "like", "condition": "secs"}], "condition 'secs' must be a binary target"),
        ([{"name": "a"}, {"name": "b", "condition": "a"}, {"name": "c", "condition": "b"}], "condition 'b' must be a binary target without a condition"),
        ([{"name": "click", "given": "x"}], "unknown key(s) ['given']"),
    ],
)
def test_bad_conditions_name_the_target(targets: list, message: str) -> None:
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        Schema.from_dict({**SCHEMA, "targets": targets})


def test_a_missing_target_column_names_the_target_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    table = pa.Table.from_batches([records(20)]).drop_columns(["like"])
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"target 'like'.*missing") as error:
        Preprocessor(Schema.from_dict(SCHEMA)).fit(DataSource.from_config(str(path)))
    assert "train.parquet" in str(error.value)


def test_a_binary_target_outside_0_1_is_a_named_error() -> None:
    bad = records(10, like=np.array([0, 0, 2, 0, 0, 0, 0, 0, 0, 0], np.float32))
    with pytest.raises(DataError, match="target 'like'"):
        Preprocessor(Schema.from_dict(SCHEMA)).fit([Chunk(bad, "rows.parquet", 1)])
