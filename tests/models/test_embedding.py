"""EmbeddingCollection: one table per schema table, pretrained rows, pooling, dense inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap, TableInfo
from recstack.errors import ConfigError
from recstack.nn.embedding import EmbeddingCollection
from recstack.nn.inputs import split_features
from recstack.schema import Schema

from .helpers import DIM, MAXLEN, PRETRAINED_ITEMS, fit, full_records, full_schema, write_pretrained


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, vectors = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records), vectors


def test_features_sharing_a_table_share_one_embedding(world):
    feature_map, _, _ = world
    embeddings = EmbeddingCollection(feature_map)
    assert embeddings.table("item_id") is embeddings.table("hist_item_ids")
    assert embeddings.table("genre") is embeddings.table("hist_genres")
    assert embeddings.table("item_id") is not embeddings.table("genre")
    tables = [m for m in embeddings.modules() if isinstance(m, nn.Embedding)]
    assert len(tables) == len(feature_map.tables) == len(embeddings.table_names)


def test_lookup_and_pooled_shapes(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    assert embeddings.lookup(batch, "item_id").shape == (64, DIM)
    assert embeddings.lookup(batch, "hist_item_ids").shape == (64, MAXLEN, DIM)
    assert embeddings.pooled(batch, "hist_item_ids").shape == (64, DIM)
    assert embeddings.pooled(batch, "price").shape == (64, DIM)  # bucketised numeric
    assert torch.equal(embeddings.pooled(batch, "item_id"), embeddings.lookup(batch, "item_id"))


def test_padding_row_is_zero_and_never_learns(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    table = embeddings.table("hist_item_ids")
    assert torch.equal(table.weight[0], torch.zeros(DIM))
    embeddings.pooled(batch, "hist_item_ids").sum().backward()
    assert torch.equal(table.weight.grad[0], torch.zeros(DIM))
    assert table.weight.grad[2:].abs().sum() > 0


def test_mean_pooling_averages_the_real_positions(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    values = embeddings.lookup(batch, "hist_item_ids")  # (B, L, D)
    mask = batch.mask("hist_item_ids")
    row = int(torch.nonzero(mask.sum(1) == 3)[0])
    expected = values[row, mask[row]].mean(dim=0)
    assert torch.allclose(embeddings.pooled(batch, "hist_item_ids")[row], expected)
    empty = int(torch.nonzero(mask.sum(1) == 0)[0])
    assert torch.equal(embeddings.pooled(batch, "hist_item_ids")[empty], torch.zeros(DIM))


def test_weighted_pooling_uses_the_weights(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    weights = batch.weights["tags"]  # (B, L)
    values = embeddings.lookup(batch, "tags")  # (B, L, D)
    expected = (weights.unsqueeze(-1) * values).sum(dim=1)  # weighted_sum
    pooled = embeddings.pooled(batch, "tags")
    assert torch.allclose(pooled, expected, atol=1e-6)
    doubled = Batch(ids=batch.ids, sequences=batch.sequences, weights={"tags": 2 * weights}, dense=batch.dense)
    assert torch.allclose(embeddings.pooled(doubled, "tags"), 2 * pooled, atol=1e-6)


def test_pretrained_rows_come_from_the_vector_file_and_stay_frozen(world):
    feature_map, batch, vectors = world
    embeddings = EmbeddingCollection(feature_map)
    table = embeddings.table("item_pre")
    assert table.weight.shape == (2 + PRETRAINED_ITEMS, DIM)
    assert torch.equal(table.weight[2:], torch.from_numpy(vectors))
    assert torch.equal(table.weight[:2], torch.zeros(2, DIM))
    assert not table.weight.requires_grad
    # "i7" is the file's 8th id, so vocabulary row 2 + 7 and the 8th vector; ids without a
    # vector (i20..) map to the zero padding row
    raw_items = torch.tensor(full_records(64).column("item_id").to_numpy())
    rows = batch.ids["item_pre"]
    assert torch.equal(rows, torch.where(raw_items < PRETRAINED_ITEMS, raw_items + 2, 0))
    looked_up = embeddings.lookup(batch, "item_pre")
    known = raw_items < PRETRAINED_ITEMS
    assert torch.equal(looked_up[known], torch.from_numpy(vectors)[raw_items[known]])
    assert torch.equal(looked_up[~known], torch.zeros(int((~known).sum()), DIM))


def test_trainable_pretrained_table_learns(world):
    feature_map, _, _ = world
    info = feature_map.tables["pre"]
    tables = {**feature_map.tables, "pre": TableInfo(**{**info.__dict__, "trainable": True})}
    embeddings = EmbeddingCollection(FeatureMap(schema=feature_map.schema, tables=tables))
    assert embeddings.table("item_pre").weight.requires_grad


def test_pretrained_file_of_the_wrong_shape_is_a_config_error(world):
    feature_map, _, _ = world
    info = feature_map.tables["pre"]
    tables = {**feature_map.tables, "pre": TableInfo(**{**info.__dict__, "num_rows": 50})}
    with pytest.raises(ConfigError, match="table 'pre'.*refit"):
        EmbeddingCollection(FeatureMap(schema=feature_map.schema, tables=tables))


def test_sparse_tables_have_sparse_gradients(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map, features=["item_id", "hist_item_ids"], sparse=True)
    embeddings.embed_fields(batch, ["item_id", "hist_item_ids"]).sum().backward()
    grad = embeddings.table("item_id").weight.grad
    assert grad.is_sparse
    optimizer = torch.optim.SparseAdam(list(embeddings.parameters()), lr=0.1)
    before = embeddings.table("item_id").weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, embeddings.table("item_id").weight)


def test_embed_fields_stacks_and_dense_input_concatenates(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    split = split_features(feature_map)
    assert split.dense == ("age", "vec")
    assert embeddings.embed_fields(batch, split.embedded).shape == (64, len(split.embedded), DIM)
    dense = embeddings.dense_input(batch, split.dense)
    assert dense.shape == (64, 1 + 3)
    assert torch.equal(dense[:, 0], batch.dense["age"]) and torch.equal(dense[:, 1:], batch.dense["vec"])
    assert embeddings.output_dim(split.all) == DIM * len(split.embedded) + 4
    assert embeddings.concat(batch, split.all).shape == (64, embeddings.output_dim(split.all))
    assert embeddings.dense_input(batch, []).shape == (64, 0)


def test_embed_fields_needs_one_dim():
    schema = Schema.from_dict(
        {
            "tables": {"a": {"dim": 4}, "b": {"dim": 6}},
            "features": [{"name": "a", "kind": "categorical"}, {"name": "b", "kind": "categorical"}],
        }
    )
    feature_map = FeatureMap(schema=schema, tables={"a": TableInfo("a", 5, 4), "b": TableInfo("b", 5, 6)})
    embeddings = EmbeddingCollection(feature_map)
    batch = Batch(ids={"a": torch.tensor([2]), "b": torch.tensor([3])})
    with pytest.raises(ValueError, match=r"one embedding dim, got \{'a': 4, 'b': 6\}"):
        embeddings.embed_fields(batch, ["a", "b"])


def test_table_names_that_clash_with_module_dict_attributes_work():
    schema = Schema.from_dict({"features": [{"name": "item", "kind": "categorical", "table": "items"}]})
    feature_map = FeatureMap(schema=schema, tables={"items": TableInfo("items", 5, 4)})
    embeddings = EmbeddingCollection(feature_map)
    assert embeddings.lookup(Batch(ids={"item": torch.tensor([2, 3])}), "item").shape == (2, 4)
    assert embeddings.table_names == ["items"]


def test_present_rows_counts_every_feature_of_a_table_together(world):
    feature_map, batch, _ = world
    embeddings = EmbeddingCollection(feature_map)
    rows, counts = embeddings.present_rows(batch, ["item_id", "hist_item_ids"])["item"]
    ids = torch.cat([batch.ids["item_id"], batch.sequences["hist_item_ids"].reshape(-1)])
    ids = ids[ids != 0]
    assert torch.equal(rows, torch.unique(ids))
    assert counts.sum() == ids.numel()
    assert 0 not in rows.tolist()
