"""Seed 003's configs follow the article: every embedding 10-d (tf.feature_column.embedding_column(
..., 10)), on the same MovieLens features and shared tables as the other ml100k configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstack.config import RunConfig
from recstack.schema import NumericFeature, NumericTransform, Schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["ml100k_embedding_mlp", "ml100k_deep_crossing"])
def test_seed003_configs_embed_every_feature_in_ten_dimensions(name: str) -> None:
    schema = RunConfig.from_yaml(ROOT / "configs" / f"{name}.yaml").schema
    table_dims = {table.name: table.dim for table in schema.tables.values()}
    bucket_dims = {f.name: f.dim for f in schema.features if isinstance(f, NumericFeature) and f.transform is NumericTransform.BUCKETIZE}
    assert {"user", "item", "genre", "gender", "occupation"} <= set(table_dims) and "age" in bucket_dims
    assert set(table_dims.values()) | set(bucket_dims.values()) == {10}, (table_dims, bucket_dims)


def test_seed003_schema_has_the_features_and_tables_of_the_shared_one() -> None:
    shared = Schema.from_yaml(ROOT / "schemas/movielens_ctr.yaml")
    seed003 = Schema.from_yaml(ROOT / "schemas/movielens_ctr_10d.yaml")
    assert seed003.names == shared.names and set(seed003.tables) == set(shared.tables)
    assert [type(f) for f in seed003.features] == [type(f) for f in shared.features]
    assert seed003.label == shared.label and seed003.group == shared.group
