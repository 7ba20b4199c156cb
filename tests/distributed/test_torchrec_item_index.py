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
    exact_scores, exact_ids = result["exact"]
    scores, ids = result[backend]
    assert exact_ids.shape == (ids.shape[0], 10) and ids.shape[0] > 50
    np.testing.assert_array_equal(ids, exact_ids)  # the user's raw item ids, same order
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


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
