"""``recstack export``, ``embed-items``, ``embed-users`` and ``index`` on a tiny two-tower run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import torch

from recstack.cli import main
from recstack.data.sources import DataSource
from recstack.export.run_folder import load_run
from recstack.retrieval.index import load_index
from recstack.workflows.retrieval import catalog_batch, user_feature_names


@pytest.fixture(scope="module")
def run_copy(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("export") / "dssm"
    shutil.copytree(tiny_runs["retrieval"], target)
    return target


def test_export_writes_onnx_towers_matching_pytorch(run_copy: Path, tiny_runs: dict[str, Path]) -> None:
    assert main(["export", str(run_copy)]) == 0
    out = run_copy / "export"
    report = json.loads((out / "export.json").read_text())
    assert report["user"]["max_abs_error"] <= 1e-5 and report["item"]["max_abs_error"] <= 1e-5
    # check again, independently: the item tower over the whole catalogue
    run = load_run(run_copy)
    tower = run.model.item_tower()
    _, batch = catalog_batch(run.preprocessor, DataSource.from_config(str(tiny_runs["catalog"])), list(tower.features), "item_id")
    inputs = tower.inputs_from_batch(batch)
    session = ort.InferenceSession(str(out / "item_tower.onnx"), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    (onnx_vectors,) = session.run(None, {n: t.numpy() for n, t in inputs.items() if n in graph_inputs})
    with torch.no_grad():
        torch_vectors = tower(*inputs.values()).numpy()
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-5)
    weights = torch.load(out / "user_tower.pt", weights_only=True)
    assert set(weights) == set(run.model.user_tower().state_dict())


def test_embed_items_writes_every_catalogue_item(run_copy: Path, tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    catalog_ids = pq.read_table(tiny_runs["catalog"]).column("item_id").to_pylist()
    assert main(["embed-items", str(run_copy), "--catalog", str(tiny_runs["catalog"]), "--output", str(tmp_path / "items.parquet")]) == 0
    table = pq.read_table(tmp_path / "items.parquet")
    assert table.column("item_id").to_pylist() == catalog_ids
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    assert vectors.shape[0] == len(catalog_ids) and np.isfinite(vectors).all()
    assert main(["embed-items", str(run_copy), "--output", str(tmp_path / "items.npy")]) == 0  # the run's own catalogue
    np.testing.assert_allclose(np.load(tmp_path / "items.npy"), vectors)
    assert np.load(tmp_path / "items.ids.npy").tolist() == catalog_ids


def test_embed_users_writes_one_vector_per_row(run_copy: Path, tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_runs["root"] / "data" / "retrieval_valid.parquet"
    assert main(["embed-users", str(run_copy), "--data", str(data), "--output", str(tmp_path / "users.parquet")]) == 0
    table = pq.read_table(tmp_path / "users.parquet")
    assert table.column("user_id").to_pylist() == pq.read_table(data).column("user_id").to_pylist()


@pytest.mark.parametrize("backend, kind", [("exact", None), ("faiss", "hnsw")])
def test_index_command_saves_a_searchable_item_index(run_copy: Path, tiny_runs: dict[str, Path], tmp_path: Path, backend: str, kind: str | None) -> None:
    args = ["index", str(run_copy), "--catalog", str(tiny_runs["catalog"]), "--backend", backend, "--output", str(tmp_path / "index")]
    assert main(args + (["--kind", kind] if kind else [])) == 0
    index = load_index(tmp_path / "index")
    assert len(index) == 40
    run = load_run(run_copy)
    row = pq.read_table(tiny_runs["root"] / "data" / "retrieval_valid.parquet").slice(0, 1)
    batch = run.preprocessor.transform(row, features=user_feature_names(run.model), with_label=False)
    with torch.no_grad():
        query = run.model.encode_user(batch).numpy()
    _, ids = index.search(query, 5)
    assert set(ids[0].tolist()) <= set(range(1, 41))


def _string_item_ids(source: Path, target: Path) -> Path:
    """The tiny data with every item id (columns and id lists) as a string: 7 -> "m7"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def named(values: pa.Array) -> pa.Array:
        return pc.binary_join_element_wise("m", pc.cast(values, pa.string()), "")

    target.mkdir(parents=True, exist_ok=True)
    for file in source.glob("*.parquet"):
        table = pq.read_table(file)
        for column in ("item_id", "hist_item_ids", "hist_liked_item_ids", "seen_item_ids"):
            if column in table.column_names:
                values = table.column(column).combine_chunks()
                if pa.types.is_list(values.type):
                    values = pa.ListArray.from_arrays(values.offsets, named(values.flatten()))
                else:
                    values = named(values)
                table = table.set_column(table.column_names.index(column), column, values)
        pq.write_table(table, target / file.name)
    return target


@pytest.fixture(scope="module")
def string_id_runs(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny retriever and ranker trained again on item ids "m1" ... "m40"."""
    from recstack.config import RunConfig
    from recstack.workflows.train import train_run

    from .tiny_runs import ROOT

    root = tmp_path_factory.mktemp("string_ids")
    data = _string_item_ids(tiny_runs["root"] / "data", root / "data")
    runs = {
        "retrieval": RunConfig.from_dict({
            "name": "tiny_dssm_str", "schema": str(ROOT / "schemas/movielens_retrieval.yaml"),
            "data": {"train": str(data / "retrieval_train.parquet"), "valid": str(data / "retrieval_valid.parquet"), "catalog": str(data / "items.parquet"), "seen": str(data / "seen.parquet")},
            "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
            "model": {"name": "dssm", "params": {"hidden_dims": [16, 8], "output_activation": "identity"}},
            "loader": {"batch_size": 64}, "trainer": {"epochs": 1, "lr": 0.01, "monitor": "recall@10"}, "evaluation": {"ks": [10]},
            "output": str(root / "dssm"),
        }),
        "ranker": RunConfig.from_dict({
            "name": "tiny_din_str", "schema": str(ROOT / "schemas/movielens_ctr.yaml"),
            "data": {"train": str(data / "ctr_train.parquet"), "valid": str(data / "ctr_valid.parquet")},
            "task": {"type": "binary"},
            "model": {"name": "din", "params": {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}, {"candidate": "genre", "history": "hist_genres"}], "attention_hidden_dims": [8], "hidden_dims": [16]}},
            "loader": {"batch_size": 128}, "trainer": {"epochs": 1, "lr": 0.01, "monitor": "auc"},
            "output": str(root / "din"),
        }),
    }
    for config in runs.values():
        train_run(config, log=lambda message: None)
    return {"retrieval": root / "dssm", "ranker": root / "din", "data": data}


def test_string_item_ids_through_index_and_service(string_id_runs: dict[str, Path], tmp_path: Path) -> None:
    """Catalogue ids "m1".."m40": the saved FAISS index and the service return those strings."""
    from recstack.serving.catalogue import Catalogue
    from recstack.serving.service import RecommendationService
    from recstack.serving.types import RecommendRequest

    data = string_id_runs["data"]
    names = set(pq.read_table(data / "items.parquet").column("item_id").to_pylist())
    assert main(["index", str(string_id_runs["retrieval"]), "--backend", "faiss", "--output", str(tmp_path / "index")]) == 0
    catalogue = Catalogue.from_files(catalog=data / "items.parquet", users=data / "users.parquet", history=data / "retrieval_train.parquet")
    for index in (tmp_path / "index", None):  # the saved index, and one built at start-up
        service = RecommendationService(retrieval_run=string_id_runs["retrieval"], ranking_run=string_id_runs["ranker"], catalogue=catalogue, index=index, backend="faiss")
        [seen, fresh] = service.recommend([RecommendRequest(user_id=3, k=5), RecommendRequest(user_id=3, k=5, history=["m1", "m2"])])
        for response in (seen, fresh):
            ids = [item.item_id for item in response.items]
            assert len(ids) == 5 and all(isinstance(i, str) for i in ids) and set(ids) <= names, ids
            assert response.fallback is None
        assert not {"m1", "m2"} & {item.item_id for item in fresh.items}  # the request's history is excluded
        history = set(catalogue.histories.get(3).tolist())
        assert not history & {item.item_id for item in seen.items}
