"""Categorical features: a fitted vocabulary or hash buckets, with fixed padding and OOV rows.

Every table's rows are: 0 = padding, 1 = out-of-vocabulary (unseen values and missing values),
2.. = known values, most frequent first (ties broken by value).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from recstack.data.batch import OOV_INDEX, PADDING_INDEX
from recstack.data.vocabulary import FIRST_VALUE_INDEX, Vocabulary

from ._files import fit, read_all, write_parquet, write_text

# city counts: b x4, a x3, c x2, d x1
CITIES = ["a", "b", "c", "b", "a", "d", "b", "c", "a", "b"]


def city_schema(**table: object) -> dict:
    return {
        "label": None,
        "tables": {"city": {"dim": 4, **table}},
        "features": [{"name": "city", "kind": "categorical", "table": "city"}],
    }


def test_rows_are_padding_oov_then_values_by_frequency(tmp_path):
    pre, _ = fit(city_schema(), write_parquet(tmp_path / "t.parquet", {"city": CITIES}))
    assert (PADDING_INDEX, OOV_INDEX, FIRST_VALUE_INDEX) == (0, 1, 2)
    assert pre.lookups["city"].keys == ["b", "a", "c", "d"]
    ids = pre.transform(pa.record_batch({"city": ["b", "a", "c", "d"]})).ids["city"]
    assert ids.tolist() == [2, 3, 4, 5]
    assert ids.dtype.is_floating_point is False
    assert pre.feature_map().tables["city"].num_rows == 2 + 4


def test_frequency_ties_are_broken_by_value(tmp_path):
    pre, _ = fit(city_schema(), write_parquet(tmp_path / "t.parquet", {"city": ["z", "y", "x", "y", "z", "x"]}))
    assert pre.lookups["city"].keys == ["x", "y", "z"]


def test_unseen_and_missing_values_map_to_oov_never_an_error(tmp_path):
    pre, _ = fit(city_schema(), write_parquet(tmp_path / "t.parquet", {"city": CITIES}))
    ids = pre.transform(pa.record_batch({"city": pa.array(["never-seen", None, "b", ""])})).ids["city"]
    assert ids.tolist() == [OOV_INDEX, OOV_INDEX, 2, OOV_INDEX]


def test_missing_values_are_not_counted_as_a_value(tmp_path):
    # An empty CSV cell is a missing value: it gets the OOV row, not a row of its own.
    path = write_text(tmp_path / "t.csv", 'city,x\na,1\n,1\n,1\n,1\nb,1\n')
    pre, source = fit(city_schema(), path)
    assert pre.lookups["city"].keys == ["a", "b"]
    assert read_all(pre, source).ids["city"].tolist() == [2, OOV_INDEX, OOV_INDEX, OOV_INDEX, 3]


def test_min_count_drops_rare_values_to_oov(tmp_path):
    pre, _ = fit(city_schema(min_count=3), write_parquet(tmp_path / "t.parquet", {"city": CITIES}))
    assert pre.lookups["city"].keys == ["b", "a"]
    ids = pre.transform(pa.record_batch({"city": ["a", "b", "c", "d"]})).ids["city"]
    assert ids.tolist() == [3, 2, OOV_INDEX, OOV_INDEX]


def test_max_size_keeps_the_most_frequent_values(tmp_path):
    pre, _ = fit(city_schema(max_size=2), write_parquet(tmp_path / "t.parquet", {"city": CITIES}))
    assert pre.lookups["city"].keys == ["b", "a"]
    assert pre.feature_map().tables["city"].num_rows == 4


def test_integer_ids_keep_integer_keys_and_match_their_text(tmp_path):
    pre, _ = fit(city_schema(), write_parquet(tmp_path / "t.parquet", {"city": [7, 7, 1_000_000_000_007, 5]}))
    assert pre.lookups["city"].keys == [7, 5, 1_000_000_000_007]
    as_ints = pre.transform(pa.record_batch({"city": pa.array([5, 7, 1_000_000_000_007, 8, None])}))
    as_text = pre.transform(pa.record_batch({"city": ["5", "7", "1000000000007", "8", ""]}))
    assert as_ints.ids["city"].tolist() == as_text.ids["city"].tolist() == [3, 2, 4, OOV_INDEX, OOV_INDEX]


def test_text_keys_match_integer_columns(tmp_path):
    # A vocabulary fitted on a CSV (text) serves a Parquet file with integer ids.
    pre, _ = fit(city_schema(), write_text(tmp_path / "t.csv", "city\n42\n42\n7\n"))
    assert pre.lookups["city"].keys == ["42", "7"]
    assert pre.transform(pa.record_batch({"city": pa.array([7, 42, 3])})).ids["city"].tolist() == [3, 2, OOV_INDEX]


def shared_schema() -> dict:
    return {
        "label": None,
        "tables": {"item": {"dim": 8}},
        "features": [
            {"name": "item_id", "kind": "categorical", "table": "item"},
            {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 4},
        ],
    }


def test_features_naming_one_table_share_its_vocabulary(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", {"item_id": [10, 20, 10], "hist_item_ids": ["20,30", "10", "30,30,20"]})
    pre, source = fit(shared_schema(), path)
    # One vocabulary counted over both features: 20 x3, 30 x3, 10 x3 (ties by value).
    assert list(pre.lookups) == ["item"]
    assert sorted(pre.lookups["item"].keys) == ["10", "20", "30"]
    assert list(pre.feature_map().tables) == ["item"]
    batch = read_all(pre, source)
    row_of = {key: FIRST_VALUE_INDEX + i for i, key in enumerate(pre.lookups["item"].keys)}
    assert batch.ids["item_id"].tolist() == [row_of["10"], row_of["20"], row_of["10"]]
    assert batch.sequences["hist_item_ids"][0, :2].tolist() == [row_of["20"], row_of["30"]]
    assert batch.sequences["hist_item_ids"][1, 0].item() == batch.ids["item_id"][0].item()


def test_separate_tables_have_separate_vocabularies(tmp_path):
    schema = {
        "label": None,
        "features": [
            {"name": "a", "kind": "categorical"},
            {"name": "b", "kind": "categorical"},
        ],
    }
    pre, _ = fit(schema, write_parquet(tmp_path / "t.parquet", {"a": ["x", "x", "y"], "b": ["y", "z", "z"]}))
    assert pre.lookups["a"].keys == ["x", "y"] and pre.lookups["b"].keys == ["z", "y"]
    batch = pre.transform(pa.record_batch({"a": ["y"], "b": ["y"]}))
    assert batch.ids["a"].tolist() == [3] and batch.ids["b"].tolist() == [3]


def test_a_hashed_table_buckets_values_without_a_vocabulary(tmp_path):
    pre, _ = fit(city_schema(hash_buckets=16), write_parquet(tmp_path / "t.parquet", {"city": CITIES}))
    assert pre.feature_map().tables["city"].num_rows == 2 + 16
    values = [f"user-{i}" for i in range(500)]
    ids = pre.transform(pa.record_batch({"city": values + [None, ""]})).ids["city"]
    assert ids[:500].min() >= 2 and ids[:500].max() < 18
    assert len(set(ids[:500].tolist())) == 16  # every bucket is used
    assert ids[500:].tolist() == [OOV_INDEX, OOV_INDEX]
    # Unseen values are hashed like any other: no OOV for a hashed table.
    again = pre.transform(pa.record_batch({"city": values})).ids["city"]
    assert again.equal(ids[:500])


def test_vocabulary_round_trips_through_plain_data():
    vocab = Vocabulary(keys=["b", "a"])
    again = Vocabulary.from_dict(vocab.to_dict())
    assert again.keys == ["b", "a"]
    assert again.lookup(pa.array(["a", "b", "q"])).tolist() == [3, 2, OOV_INDEX]


@pytest.mark.parametrize("keys", [[], ["x"], [3, 1]])
def test_lookup_of_an_empty_array_is_empty(keys):
    assert Vocabulary(keys=keys).lookup(pa.array([], pa.string())).shape == (0,)
