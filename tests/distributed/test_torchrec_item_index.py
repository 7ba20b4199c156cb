"""Item tables too big to gather: a sharded DSSM's item vectors written shard by shard (each rank
its own rows of the row-wise item table, never the whole table) and streamed into FAISS and
Milvus Lite by rank 0 give the top-10 of the same model gathered, searched exactly."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ddp_workers import spawn
from torchrec_workers import item_vectors_in_shards


def assert_same_top(ids, scores, item_ids, true_scores, atol=1e-5):
    """``ids`` / ``scores`` (Q, K) are the exact top-K of ``true_scores`` (Q, N) up to the order
    of tied items: the K best scores, each found id scoring what was returned, no id twice.
    (Catalogue items unseen in training share the OOV row: with one genre their vectors are
    equal, and which of them comes first is a matter of float rounding.)"""
    k = ids.shape[1]
    np.testing.assert_allclose(scores, -np.sort(-true_scores, axis=1)[:, :k], atol=atol)
    column = {item: j for j, item in enumerate(item_ids.tolist())}
    columns = np.array([[column[item] for item in row] for row in ids.tolist()])  # (Q, K)
    np.testing.assert_allclose(np.take_along_axis(true_scores, columns, axis=1), scores, atol=atol)
    assert all(len(set(row)) == k for row in ids.tolist())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from recstack.datasets import generate_retrieval

    folder = tmp_path_factory.mktemp("item_index")
    generate_retrieval(folder / "data", num_users=120, num_items=300, interactions_per_user=8, num_clusters=10, seed=0)
    spawn(item_vectors_in_shards, str(folder))
    return folder, [torch.load(folder / f"vectors{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow
def test_no_rank_held_the_whole_item_table(written):
    _, ranks = written
    shards = [r["shard"] for r in ranks]
    rows = shards[0]["num_rows"]
    assert all(s["table"] == "item" for s in shards)
    assert all(0 < s["held_rows"] < rows for s in shards)  # each rank: its row-wise shard only
    assert [(s["start"], s["stop"]) for s in shards] == [(0, shards[0]["stop"]), (shards[0]["stop"], rows)]
    assert all(s["stop"] - s["start"] == s["held_rows"] for s in shards)  # embedded = the rows it holds
    assert sum(s["items"] for s in shards) == ranks[0]["catalogue"]  # every catalogue item once
    assert all(s["parts"] >= 2 for s in shards)  # several bounded parts, unequal counts per rank


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_the_index_from_the_shards_equals_the_gathered_model(written, backend):
    _, ranks = written
    result = ranks[0]
    assert result[f"{backend}_added"] == result["catalogue"]
    item_ids, item_vectors, users = result["gathered"]
    true_scores = users @ item_vectors.T  # (Q, N): the gathered model's
    scores, ids = result[backend]
    assert ids.shape == (len(users), 10) and len(users) > 50
    assert_same_top(*result["exact"][::-1], item_ids, true_scores)  # the reference search itself
    assert_same_top(ids, scores, item_ids, true_scores)  # the user's raw item ids


@pytest.mark.slow
def test_the_parts_hold_raw_catalogue_ids_and_vectors(written):
    folder, ranks = written
    parts = sorted((folder / "vectors").glob("part-r*.parquet"))
    table = pq.read_table(parts[0])
    assert table.column_names == ["id", "vector"] and table.schema.field("vector").type.list_size == 32  # the towers' output
    catalogue = set(pq.read_table(folder / "data" / "items.parquet").column("item_id").to_pylist())
    ids = [i for part in parts for i in pq.read_table(part).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == len(catalogue) and set(ids) == catalogue
    assert not list((folder / "vectors").glob(".*.tmp"))  # atomic: no leftovers


def _row_groups(data, tmp_path):
    """The training split in row groups of 128 (record batches for both ranks), the catalogue."""
    out = tmp_path / "data"
    out.mkdir()
    pq.write_table(pq.read_table(data / "train.parquet"), out / "train.parquet", row_group_size=128)
    (out / "items.parquet").write_bytes((data / "items.parquet").read_bytes())
    return out


def _dssm_config(tmp_path, data, **distributed):
    import yaml

    from torchrec_workers import RETRIEVAL_SCHEMA

    config = {
        "name": "dssm_not_gathered",
        "seed": 0,
        "data": {"train": str(data / "train.parquet"), "catalog": str(data / "items.parquet")},
        "schema": RETRIEVAL_SCHEMA,
        "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
        "model": {"name": "dssm", "params": {"hidden_dims": [32], "output_activation": "identity"}},
        "loader": {"batch_size": 64, "shuffle_buffer": 0},
        "trainer": {"epochs": 1, "lr": 0.01, "progress": False, "device": "cpu"},
        "distributed": {"embeddings": "sharded", "tables": {"item": {"sharding": "row_wise"}}, **distributed},
        "output": str(tmp_path / "run"),
        "threads": 1,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_a_run_not_gathered_writes_the_index_and_dcp_shards_that_gather_to_the_same_top10(written, tmp_path, backend):
    import json

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from recstack.data.sources import DataSource
    from recstack.export.run_folder import load_preprocessor
    from recstack.models import build_model
    from recstack.retrieval.index import load_index
    from recstack.workflows.retrieval import embed_items, embed_users
    from recstack.workflows.sharded import load_gathered_state
    from torchrec_workers import train_run_metrics

    folder, _ = written
    data = folder / "data"
    milvus = {"item_index_uri": str(tmp_path / "milvus.db"), "item_index_kind": "FLAT"}  # exact: compared with exact search
    index = {"item_index": backend} | (milvus if backend == "milvus" else {})
    config = _dssm_config(tmp_path, _row_groups(data, tmp_path), gather_tables="never", **index)
    spawn(train_run_metrics, str(config), str(tmp_path))
    metrics = torch.load(tmp_path / "rank0.pt", weights_only=False)["metrics"]
    run = tmp_path / "run"
    assert not (run / "model.pt").exists() and (run / "sharded_model.json").exists()
    shards = metrics["item_index"]["shards"]
    assert all(0 < s["held_rows"] < s["num_rows"] for s in shards)
    catalogue = pq.read_table(data / "items.parquet").num_rows
    assert metrics["item_index"]["indexed"] == metrics["item_index"]["items"] == catalogue

    # one host that can hold the tables gathers the DCP shards: the same model, searched exactly
    dcp_to_torch_save(run / "model_shards", tmp_path / "full.pt")
    state = torch.load(tmp_path / "full.pt", weights_only=False)["model"]
    recipe = json.loads((run / "sharded_model.json").read_text())
    preprocessor = load_preprocessor(run / "preprocessor.json")
    plain = build_model(recipe["name"], preprocessor.feature_map(), recipe["params"])
    load_gathered_state(plain, state)
    ids, vectors = embed_items(plain, preprocessor, DataSource(paths=(str(data / "items.parquet"),)))
    _, users = embed_users(plain, preprocessor, DataSource(paths=(str(data / "valid.parquet"),)))
    with load_index(run / "item_index") as loaded:
        scores, found = loaded.search(users, 10)
    assert_same_top(found, scores, ids, users @ vectors.T)


@pytest.mark.slow
def test_not_gathering_a_run_with_validation_is_a_clear_error(written, tmp_path):
    import yaml

    from torchrec_workers import train_run_metrics

    folder, _ = written
    config = _dssm_config(tmp_path, _row_groups(folder / "data", tmp_path), gather_tables="never")
    raw = yaml.safe_load(config.read_text())
    raw["data"]["valid"] = str(folder / "data" / "valid.parquet")
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"data.valid cannot be scored without gathering the tables"):
        spawn(train_run_metrics, str(config), str(tmp_path))


def test_gather_tables_auto_gathers_what_fits_the_budget():
    from recstack.errors import ConfigError
    from recstack.training.sharding_config import DistributedConfig

    auto = DistributedConfig.from_dict({"embeddings": "sharded", "memory_budget_mb": 100})
    assert auto.gathers(100 * 2**20) and not auto.gathers(100 * 2**20 + 1)
    assert DistributedConfig.from_dict({"embeddings": "sharded"}).gathers(10**15)  # no budget: gather
    assert DistributedConfig.from_dict({"gather_tables": "always", "memory_budget_mb": 1}).gathers(10**15)
    assert not DistributedConfig.from_dict({"gather_tables": "never"}).gathers(0)
    with pytest.raises(ConfigError, match="distributed.item_index_uri: item_index: milvus needs"):
        DistributedConfig.from_dict({"gather_tables": "never", "item_index": "milvus"})
    with pytest.raises(ConfigError, match="distributed.gather_tables: expected one of"):
        DistributedConfig.from_dict({"gather_tables": "sometimes"})
