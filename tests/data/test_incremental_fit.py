"""Incremental refit (``Preprocessor.fit(data, parent=...)``): known ids keep their rows, new ids
above min_count are appended, hashed tables and buckets stay, numeric normalisers kept or updated
by the documented rule, and a schema change that cannot grow is a ConfigError naming the feature."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recstack.data.incremental import NumericUpdate
from recstack.data.numeric import NumericStats
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.data.vocabulary import Vocabulary
from recstack.errors import ConfigError
from recstack.schema import Schema

SCHEMA = {
    "label": "label",
    "tables": {"item": {"dim": 4, "min_count": 2}, "tag": {"dim": 4, "hash_buckets": 7}},
    "features": [
        {"name": "item_id", "kind": "categorical", "table": "item"},
        {"name": "hist", "kind": "sequence", "table": "item", "maxlen": 3},
        {"name": "tag", "kind": "categorical", "table": "tag"},
        {"name": "price", "kind": "numeric", "transform": "standard"},
        {"name": "age", "kind": "numeric", "transform": "bucketize", "num_buckets": 3, "dim": 4},
    ],
}


def chunk(items: list[int], prices: list[float], hist: list[str] | None = None) -> list[Chunk]:
    n = len(items)
    records = pa.RecordBatch.from_pydict(
        {
            "item_id": pa.array(items, pa.int64()),
            "hist": pa.array(hist if hist is not None else [""] * n),
            "tag": pa.array([f"t{i % 5}" for i in items]),
            "price": pa.array(prices, pa.float64()),
            "age": pa.array(np.linspace(10, 70, n)),
            "label": pa.array([i % 2 for i in range(n)], pa.float64()),
        }
    )
    return [Chunk(records, "<test>", 1)]


def schema(**changes) -> Schema:
    raw = {**SCHEMA, "tables": dict(SCHEMA["tables"]), "features": [dict(f) for f in SCHEMA["features"]]}
    for name, change in changes.items():
        if name in raw["tables"]:
            raw["tables"][name] = {**raw["tables"][name], **change}
        else:
            raw["features"] = [({**f, **change} if f["name"] == name else f) for f in raw["features"] if change is not None or f["name"] != name]
    return Schema.from_dict(raw)


def rows(pre: Preprocessor, items: list[int]) -> np.ndarray:
    return pre.transform(chunk(items, [1.0] * len(items))[0]).ids["item_id"].numpy()


@pytest.fixture()
def parent() -> Preprocessor:
    rng = np.random.default_rng(0)
    return Preprocessor(schema()).fit(chunk([1, 1, 2, 2, 3, 3, 3], list(rng.normal(10, 2, 7)), hist=["1,2"] * 7))


def test_known_ids_keep_their_rows_and_new_ids_above_min_count_are_appended(parent: Preprocessor) -> None:
    child = Preprocessor(schema()).fit(chunk([3, 9, 9, 8, 7, 7, 7], [1.0] * 7, hist=["2,5,5"] * 7), parent=parent)
    np.testing.assert_array_equal(rows(child, [1, 2, 3]), rows(parent, [1, 2, 3]))
    parent_rows = parent.lookups["item"].num_rows
    # 5 (14 times, in histories), 7 (3 times) and 9 (twice) reach min_count 2 in the new data; 8 does not
    assert child.lookups["item"].num_rows == parent_rows + 3
    new_rows = rows(child, [5, 7, 9, 8])
    np.testing.assert_array_equal(new_rows[:3], [parent_rows, parent_rows + 1, parent_rows + 2])  # most frequent first
    assert new_rows[3] == 1  # below min_count: OOV
    assert child.feature_map().tables["item"].num_rows == parent_rows + 3


def test_hashed_tables_buckets_and_kept_normalisers_are_the_parents(parent: Preprocessor) -> None:
    child = Preprocessor(schema()).fit(chunk([5, 5, 6], [100.0, 200.0, 300.0]), parent=parent)
    assert child.lookups["tag"] == parent.lookups["tag"]
    assert child.normalizers["age"] == parent.normalizers["age"]  # bucket boundaries never move
    assert child.normalizers["price"] == parent.normalizers["price"]  # numeric: keep (the default)
    old_rows = chunk([1, 2, 3], [9.0, 10.0, 11.0])[0]
    for key, values in parent.transform(old_rows).dense.items():
        np.testing.assert_array_equal(child.transform(old_rows).dense[key].numpy(), values.numpy())


def test_numeric_update_equals_a_fit_on_all_rows_and_records_running_moments(parent: Preprocessor) -> None:
    first = [float(v) for v in np.random.default_rng(0).normal(10, 2, 7)]
    second = [100.0, 200.0, 300.0, 50.0]
    child = Preprocessor(schema()).fit(chunk([5, 5, 6, 6], second), parent=parent, numeric=NumericUpdate.UPDATE)
    both = Preprocessor(schema()).fit(chunk([1] * 11, first + second))
    assert child.normalizers["price"].center == pytest.approx(both.normalizers["price"].center)
    assert child.normalizers["price"].scale == pytest.approx(both.normalizers["price"].scale)
    assert child.numeric_stats["price"].count == 11
    # kept normalisers still record the running moments, so a later update covers every row
    kept = Preprocessor(schema()).fit(chunk([5, 5, 6, 6], second), parent=parent)
    assert kept.numeric_stats["price"].mean == pytest.approx(np.mean(first + second))
    # and they survive the JSON round trip
    again = Preprocessor.from_dict(kept.to_dict())
    assert again.numeric_stats["price"].to_dict() == kept.numeric_stats["price"].to_dict()


def test_numeric_update_needs_the_parents_moments(parent: Preprocessor) -> None:
    old = parent.to_dict()
    del old["numeric_stats"]  # a preprocessor.json written before they were recorded
    with pytest.raises(ConfigError, match="feature 'price'.*numeric: keep"):
        Preprocessor(schema()).fit(chunk([1], [1.0]), parent=Preprocessor.from_dict(old), numeric=NumericUpdate.UPDATE)
    Preprocessor(schema()).fit(chunk([1], [1.0]), parent=Preprocessor.from_dict(old))  # keep works


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"item": {"dim": 8}}, "feature 'item_id' \\(table 'item'\\): dim changed from 4 .* to 8"),
        ({"tag": {"hash_buckets": 9}}, "feature 'tag' \\(table 'tag'\\): hash_buckets changed"),
        ({"price": {"kind": "vector", "dim": 2, "transform": None}}, "feature 'price': kind changed from 'numeric'"),
        ({"price": {"transform": "minmax"}}, "feature 'price': transform changed"),
        ({"age": {"num_buckets": 5}}, "feature 'age': bucketize num_buckets changed"),
        ({"hist": None}, "feature 'hist': in the parent run's schema but not in this one"),
    ],
)
def test_a_schema_change_that_cannot_grow_names_the_feature(parent: Preprocessor, changes: dict, message: str) -> None:
    if "price" in changes and changes["price"].get("kind") == "vector":
        raw = {**SCHEMA, "features": [f for f in SCHEMA["features"] if f["name"] != "price"] + [{"name": "price", "kind": "vector", "dim": 2}]}
        new = Schema.from_dict(raw)
    else:
        new = schema(**changes)
    with pytest.raises(ConfigError, match=message):
        Preprocessor(new).fit(iter(()), parent=parent)  # raised before any data is read


def test_a_new_feature_cannot_grow(parent: Preprocessor) -> None:
    raw = {**SCHEMA, "features": [*SCHEMA["features"], {"name": "extra", "kind": "categorical"}]}
    with pytest.raises(ConfigError, match="feature 'extra': not in the parent run's schema"):
        Preprocessor(Schema.from_dict(raw)).fit(iter(()), parent=parent)


def test_vocabulary_grown_keeps_rows_caps_size_and_unifies_key_types() -> None:
    assert Vocabulary(keys=[7, 3]).grown([3, 9, 5], max_size=3).keys == [7, 3, 9]
    assert Vocabulary(keys=[7, 3]).grown([1], max_size=2).keys == [7, 3]  # never drops known ids
    text = Vocabulary(keys=[7, 3]).grown(["3", "8"])  # a CSV day after a Parquet one: one key type
    assert text.keys == ["7", "3", "8"]
    np.testing.assert_array_equal(text.lookup(pa.array([7, 3, 8, 4])), [2, 3, 4, 1])
    assert Vocabulary(keys=["a"], unknown_index=0).grown(["b"]).unknown_index == 0


def test_numeric_stats_merge_matches_one_pass() -> None:
    values = np.random.default_rng(1).normal(5, 3, 1000)
    a, b, both = NumericStats(sample=False), NumericStats(sample=False), NumericStats(sample=False)
    a.update(values[:300])
    b.update(values[300:])
    both.update(values)
    merged = NumericStats.from_dict(a.merged(b).to_dict())
    for key in ("count", "mean", "m2", "log_mean", "log_m2", "min", "max"):
        assert merged.to_dict()[key] == pytest.approx(both.to_dict()[key])
    assert NumericStats().merged(NumericStats()).count == 0
