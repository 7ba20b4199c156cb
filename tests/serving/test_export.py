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


def test_commands_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("export", "embed-items", "embed-users", "index", "serve", "item2vec", "encode-text", "synth"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage" in capsys.readouterr().out
