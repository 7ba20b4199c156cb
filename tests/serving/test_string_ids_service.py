"""``recstack serve`` over a retrieval run whose item ids live in ``post_id`` (no ``item_id`` column
anywhere) and are strings such as "p7": the service reads the id column from the run and keys the
catalogue, the stored histories, the exclusions and the responses by it; the JSON keeps the
strings. Built through ``build_service`` (what ``recstack serve`` runs) and the FastAPI app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from recstack.config import RunConfig
from recstack.errors import ConfigError
from recstack.serving.catalogue import Catalogue
from recstack.serving.http import create_app
from recstack.serving.service import RecommendationService
from recstack.workflows.serve import build_service
from recstack.workflows.train import train_run

from .tiny_runs import ROOT, write_tiny_data

torch.set_num_threads(1)
ITEM_LISTS = ("hist_item_ids", "hist_liked_item_ids", "seen_item_ids")


def _as_posts(table: pa.Table) -> pa.Table:
    """``item_id`` 7 -> ``post_id`` "p7", item-id lists -> lists of "p7", user 3 -> "u3"."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "item_id":
            name, column = "post_id", pc.binary_join_element_wise("p", pc.cast(column, pa.string()), "")
        elif name in ITEM_LISTS:
            flat = pc.binary_join_element_wise("p", pc.cast(pc.list_flatten(column), pa.string()), "")
            column = pa.ListArray.from_arrays(column.combine_chunks().offsets, flat.combine_chunks())
        elif name == "user_id":
            column = pc.binary_join_element_wise("u", pc.cast(column, pa.string()), "")
        columns[name] = column
    return pa.table(columns)


def _schema(name: str, folder: Path) -> str:
    """The MovieLens schema with the item-id feature reading ``post_id``."""
    spec = yaml.safe_load((ROOT / "schemas" / name).read_text())
    for feature in spec["features"]:
        if feature["name"] == "item_id":
            feature["column"] = "post_id"
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="module")
def post_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("posts")
    data = write_tiny_data(root / "data")
    for path in data.glob("*.parquet"):
        pq.write_table(_as_posts(pq.read_table(path)), path)
    quiet = lambda message: None  # noqa: E731
    common = {"loader": {"batch_size": 64}, "trainer": {"epochs": 1, "lr": 0.01}}
    train_run(RunConfig.from_dict({
        "name": "posts_dssm", **common, "output": str(root / "dssm"), "schema": _schema("movielens_retrieval.yaml", root),
        "data": {"train": str(data / "retrieval_train.parquet"), "valid": str(data / "retrieval_valid.parquet"), "catalog": str(data / "items.parquet"), "seen": str(data / "seen.parquet")},
        "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
        "model": {"name": "dssm", "params": {"hidden_dims": [16, 8], "output_activation": "identity"}},
        "evaluation": {"ks": [10]}, "trainer": {**common["trainer"], "monitor": "recall@10"},
    }), log=quiet)  # fmt: skip
    train_run(RunConfig.from_dict({
        "name": "posts_din", **common, "output": str(root / "din"), "schema": _schema("movielens_ctr.yaml", root),
        "data": {"train": str(data / "ctr_train.parquet"), "valid": str(data / "ctr_valid.parquet")},
        "task": {"type": "binary"},
        "model": {"name": "din", "params": {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}], "attention_hidden_dims": [8], "hidden_dims": [16]}},
    }), log=quiet)  # fmt: skip
    return {"retrieval": root / "dssm", "ranker": root / "din", "catalog": data / "items.parquet", "users": data / "users.parquet", "history": data / "retrieval_train.parquet"}


@pytest.fixture(scope="module")
def client(post_runs) -> TestClient:
    service = build_service(backend="exact", **post_runs)
    return TestClient(create_app(service, batch_window_ms=None))


def _stored_history(post_runs, user: str) -> list[str]:
    events = pq.read_table(post_runs["history"]).filter(pc.equal(pc.field("user_id"), user))
    return events.column("post_id").to_pylist()


def test_recommendations_carry_the_runs_string_post_ids(client, post_runs):
    posts = set(pq.read_table(post_runs["catalog"]).column("post_id").to_pylist())
    user = "u3"
    seen = set(_stored_history(post_runs, user))
    assert seen  # the stored history is read by post_id and by string user id
    response = client.post("/recommend", json={"user_id": user, "k": 5, "candidates": 40})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user and body["fallback"] is None
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 5 and all(isinstance(i, str) and i in posts for i in ids)
    assert not set(ids) & seen  # the stored history, in post ids, is excluded
    assert all(item["title"] for item in body["items"])  # catalogue rows found by post id


def test_a_requests_own_history_of_post_ids_is_excluded_and_typed(client):
    history = [f"p{i}" for i in range(1, 31)]
    response = client.post("/recommend", json={"history": history, "k": 10, "candidates": 40})
    assert response.status_code == 200, response.text
    ids = [item["item_id"] for item in response.json()["items"]]
    assert ids and not set(ids) & set(history) and all(isinstance(i, str) for i in ids)
    wrong = client.post("/recommend", json={"history": [1, 2], "k": 3})
    assert wrong.status_code == 422 and "history" in wrong.text and "id type" in wrong.text


def test_user_and_item_pages_use_the_post_ids(client, post_runs):
    user = client.get("/users/u3").json()
    assert [h["item_id"] for h in user["history"]] == _stored_history(post_runs, "u3")[-50:]
    assert client.get("/items/p7").json()["post_id"] == "p7"
    assert client.get("/items/7").status_code == 404


def test_a_catalogue_keyed_by_another_column_is_refused_naming_the_runs_column(post_runs, tmp_path):
    catalog = tmp_path / "items.parquet"
    items = pq.read_table(post_runs["catalog"])
    pq.write_table(items.append_column("item_id", pa.array(np.arange(items.num_rows))), catalog)
    catalogue = Catalogue.from_files(catalog=catalog, users=None, history=None)  # item_column="item_id"
    with pytest.raises(ConfigError, match="keys its items by 'post_id'"):
        RecommendationService(retrieval_run=post_runs["retrieval"], ranking_run=post_runs["ranker"], catalogue=catalogue, backend="exact")
