"""The preprocessor is fitted in one streaming pass, saved as plain JSON, and transforms a column at
a time; a loaded copy transforms exactly like the fitted one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema

from ._files import assert_same_batch, read_all, write_parquet

EVERY_KIND = {
    "label": "label",
    "group": "user",
    "tables": {"item": {"dim": 8, "min_count": 2}, "tag": {"dim": 4, "hash_buckets": 32}},
    "features": [
        {"name": "user", "kind": "categorical", "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "hist", "kind": "sequence", "table": "item", "maxlen": 3},
        {"name": "tags", "kind": "sequence", "table": "tag", "weights": "pairs", "pooling": "weighted_mean", "maxlen": 2},
        {"name": "price", "kind": "numeric", "transform": "log1p"},
        {"name": "age", "kind": "numeric", "transform": "bucketize", "num_buckets": 3},
        {"name": "score", "kind": "numeric", "transform": "minmax", "fill": 0.0},
        {"name": "emb", "kind": "vector", "dim": 2},
    ],
}


def every_kind_rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 20, size=(n, 4))
    return {
        "label": rng.integers(0, 2, n),
        "user": [f"u{i}" for i in rng.integers(0, 10, n)],
        "item_id": items[:, 0],
        "hist": [",".join(map(str, row[1 : 1 + k])) for row, k in zip(items, rng.integers(0, 4, n))],
        "tags": [f"t{a}:{b:.2f},t{a + 1}:0.5" for a, b in zip(rng.integers(0, 50, n), rng.random(n))],
        "price": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.exponential(10, n)), from_pandas=True),  # NaN -> null: missing
        "age": rng.integers(15, 70, n).astype(float),
        "score": rng.normal(size=n),
        "emb": pa.array(rng.normal(size=(n, 2)).tolist(), pa.list_(pa.float32())),
    }


@pytest.fixture
def data(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", every_kind_rows(300))
    test = write_parquet(tmp_path / "test.parquet", every_kind_rows(100, seed=1))
    return DataSource(paths=(train,), parquet_batch_rows=64), DataSource(paths=(test,))


def test_save_then_load_gives_identical_batches(tmp_path, data):
    train, test = data
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(train)
    pre.save(tmp_path / "run" / "preprocessor.json")
    loaded = Preprocessor.load(tmp_path / "run" / "preprocessor.json")
    assert loaded.schema == pre.schema
    assert loaded.feature_map() == pre.feature_map()
    for source in (train, test):
        fitted_batch, loaded_batch = read_all(pre, source), read_all(loaded, source)
        assert_same_batch(fitted_batch, loaded_batch)
        assert fitted_batch.group.tolist() == loaded_batch.group.tolist()


def test_the_saved_state_is_plain_json(tmp_path, data):
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0])
    pre.save(tmp_path / "pre.json")
    saved = json.loads((tmp_path / "pre.json").read_text())
    assert saved["format_version"] == 1
    assert saved["vocabularies"]["item"]["keys"] == pre.lookups["item"].keys
    assert saved["hash_buckets"] == {"tag": 32}
    assert set(saved["normalizers"]) == {"price", "age", "score"}


def test_an_unknown_format_version_is_refused(tmp_path, data):
    state = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0]).to_dict()
    state["format_version"] = 99
    with pytest.raises(ValueError, match="format_version"):
        Preprocessor.from_dict(state)


def test_fit_reads_the_data_once_as_a_stream(data):
    train = data[0]
    schema = Schema.from_dict(EVERY_KIND)
    pre = Preprocessor(schema)
    chunks = train.chunks(columns=pre.input_columns(with_label=False), types=pre.csv_types())
    one_pass = pre.fit(chunk for chunk in chunks)  # a generator can be consumed only once
    assert one_pass.to_dict() == Preprocessor(schema).fit(train).to_dict()


def test_fitting_does_not_read_the_label():
    pre = Preprocessor(Schema.from_dict(EVERY_KIND))
    assert "label" not in pre.input_columns(with_label=False)
    assert "label" in pre.input_columns()


def test_the_feature_map_lists_every_embedding_table(data):
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0])
    tables = pre.feature_map().tables
    assert set(tables) == {"user", "item", "tag", "age"}
    assert tables["item"].num_rows == 2 + len(pre.lookups["item"].keys)
    assert (tables["tag"].num_rows, tables["tag"].dim) == (34, 4)
    assert tables["age"].num_rows == 2 + 3  # padding, missing, three quantile buckets
    assert pre.feature_map().table_of(pre.schema["hist"]) == tables["item"]


def test_a_batch_holds_each_feature_in_its_place(data):
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0])
    batch = read_all(pre, data[1])
    assert set(batch.ids) == {"user", "item_id", "age"}
    assert set(batch.sequences) == {"hist", "tags"} and set(batch.weights) == {"tags"}
    assert set(batch.dense) == {"price", "score", "emb"}
    assert batch.dense["emb"].shape == (100, 2) and batch.label.shape == (100,)
    assert len(batch) == 100 and batch.group.shape == (100,)


def test_inference_batches_have_no_label(data):
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0])
    records = next(data[1].chunks()).records.drop_columns(["label"])
    assert pre.transform(records).label is None
    assert read_all(pre, data[1], with_label=False).label is None


def test_a_table_of_several_record_batches_is_transformed_whole(data):
    pre = Preprocessor(Schema.from_dict(EVERY_KIND)).fit(data[0])
    table = pa.Table.from_batches([c.records for c in data[0].chunks()])
    assert table.column("user").num_chunks > 1
    assert_same_batch(pre.transform(table), read_all(pre, data[0]))
    assert len(pre.transform(table.slice(0, 0))) == 0
