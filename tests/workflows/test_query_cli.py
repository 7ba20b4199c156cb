"""``recstack query INDEX --vectors USERS``: each user's top-k item ids (the run's own ids, strings or
ints) and scores, equal to brute force over the indexed vectors, from FAISS, exact and Milvus
Lite index folders; users' ids are kept as the vector file holds them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch

from recstack.cli import main
from recstack.retrieval.index import create_index
from recstack.workflows.export import INDEX_SOURCE_NAME, write_embeddings

torch.set_num_threads(1)
N_ITEMS, N_USERS, DIM, K = 60, 12, 8, 5


def _ids(kind: str, n: int, prefix: str, start: int) -> np.ndarray:
    numbers = np.arange(start, start + n, dtype=np.int64) * 7  # not positions: ids of their own
    return np.array([f"{prefix}{i}" for i in numbers], dtype=object) if kind == "str" else numbers


@pytest.fixture(params=[("faiss", "str"), ("faiss", "int"), ("exact", "str"), ("milvus", "str"), ("milvus", "int")], ids=lambda p: "-".join(p))
def setup(request, tmp_path):
    """(item ids, item vectors, user ids, user vectors, index folder, users.parquet)."""
    backend, kind = request.param
    rng = np.random.default_rng(0)
    item_ids, items = _ids(kind, N_ITEMS, "p", 300), rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    user_ids, users = _ids(kind, N_USERS, "c", 10), rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    options = {"uri": str(tmp_path / "items.db"), "collection": "posts"} if backend == "milvus" else {}
    index = create_index(backend, dim=DIM, id_type=kind, **options)
    folder = tmp_path / "index"
    try:
        index.add(item_ids, items)
        if backend == "milvus":
            index.flush()
        index.save(folder)
    finally:
        index.close()
    (folder / INDEX_SOURCE_NAME).write_text(json.dumps({"id_column": "post_id", "id_type": kind, "backend": backend, "items": N_ITEMS}))
    vectors = write_embeddings(tmp_path / "users.parquet", user_ids, users, id_column="client_id")
    return item_ids, items, user_ids, users, folder, vectors


def _brute_force(item_ids, items, users):
    scores = users @ items.T  # (U, N)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]  # (U, K)
    return item_ids[top], np.take_along_axis(scores, top, axis=1)


def test_query_top_k_equals_brute_force_with_the_users_ids(setup, tmp_path, capsys):
    item_ids, items, user_ids, users, folder, vectors = setup
    out = tmp_path / "results.parquet"
    assert main(["query", str(folder), "--vectors", str(vectors), "--k", str(K), "--output", str(out)]) == 0
    assert f"of {N_USERS} users (client_id) to {out}: {N_USERS * K} rows" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == ["client_id", "rank", "post_id", "score"]
    assert table.num_rows == N_USERS * K
    expected_ids, expected_scores = _brute_force(item_ids, items, users)
    got_users = table.column("client_id").to_pylist()
    assert got_users == np.repeat(user_ids, K).tolist()  # the users' own ids, strings or ints
    assert {type(u) for u in got_users} == {type(user_ids.tolist()[0])}  # str stays str, int stays int
    assert table.column("rank").to_pylist() == list(range(1, K + 1)) * N_USERS
    assert table.column("post_id").to_pylist() == expected_ids.ravel().tolist()
    np.testing.assert_allclose(table.column("score").to_numpy(), expected_scores.ravel(), atol=1e-4)


def test_query_json_gives_every_user_and_the_summary_shows_the_first(setup, capsys):
    item_ids, items, user_ids, users, folder, vectors = setup
    expected_ids, _ = _brute_force(item_ids, items, users)
    assert main(["query", str(folder), "--vectors", str(vectors), "--k", str(K), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["user_column"], data["item_column"], data["k"]) == ("client_id", "post_id", K)
    assert [r["client_id"] for r in data["results"]] == user_ids.tolist()
    assert [r["items"] for r in data["results"]] == expected_ids.tolist()  # JSON keeps "p300" strings and ints
    assert main(["query", str(folder), "--vectors", str(vectors), "--k", str(K)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith(f"{user_ids[0]} -> {expected_ids[0][0]} ")
    assert len(printed) == 1 + 5 + 1 and printed[-1].startswith(f"... {N_USERS - 5} more users")


def test_query_reads_npy_vectors_and_writes_csv(tmp_path, capsys):
    rng = np.random.default_rng(1)
    item_ids, items = _ids("str", N_ITEMS, "p", 0), rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    user_ids, users = _ids("str", N_USERS, "c", 0), rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    with create_index("faiss", dim=DIM) as index:
        index.add(item_ids, items)
        index.save(tmp_path / "index")
    vectors = write_embeddings(tmp_path / "users.npy", user_ids, users, id_column="client_id")
    out = tmp_path / "top.csv"
    assert main(["query", str(tmp_path / "index"), "--vectors", str(vectors), "--k", "3", "--output", str(out)]) == 0
    table = pcsv.read_csv(out)
    assert table.column_names == ["user_id", "rank", "item_id", "score"]  # no index_source.json, no column names in .npy
    expected = item_ids[np.argsort(-(users @ items.T), axis=1, kind="stable")[:, :3]]
    assert table.column("item_id").to_pylist() == expected.ravel().tolist()
    assert table.column("user_id").to_pylist() == np.repeat(user_ids, 3).tolist()


def test_query_refuses_vectors_of_another_dim_and_a_missing_index(setup, tmp_path, capsys):
    _, _, user_ids, users, folder, _ = setup
    other = write_embeddings(tmp_path / "wide.parquet", user_ids, np.ones((N_USERS, DIM + 1), np.float32), id_column="client_id")
    assert main(["query", str(folder), "--vectors", str(other)]) == 2
    error = capsys.readouterr().err
    assert "dim 9" in error and f"dim {DIM}" in error and "wide.parquet" in error
    assert main(["query", str(tmp_path / "nowhere"), "--vectors", str(other)]) == 2
    assert "no index folder" in capsys.readouterr().err
