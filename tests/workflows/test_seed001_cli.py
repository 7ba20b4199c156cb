"""Seed 001 end to end from the CLI: train -> export -> embed-items / embed-users -> index (Milvus
Lite and FAISS) -> query, with the run's own item-id feature (``item_embed`` on ``post_id``; the
schema has no ``item_id``) and the user's own ids: strings such as "p300007" stay strings, ints
stay ints. Top-10 answers are checked against brute force over the exported item vectors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recstack.cli import main
from recstack.retrieval.index import load_index

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

SEED001 = Path(__file__).resolve().parents[2] / "examples" / "seed001"
K = 10


def _string_post_ids(folder: Path) -> None:
    """Rewrite the example's post ids 300007 -> "p300007" in the TSVs and the vector file."""
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        lines = (folder / name).read_text().splitlines()
        header = lines[0].split("\t")
        post, read = header.index("post_id"), header.index("read_post_id")
        rows = [line.split("\t") for line in lines[1:]]
        for row in rows:
            row[post] = "p" + row[post]
            row[read] = re.sub(r"(\d+)", r"p\1", row[read])
        (folder / name).write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n")
    head, *vectors = (folder / "post_vectors.txt").read_text().splitlines()
    (folder / "post_vectors.txt").write_text("\n".join([head] + ["p" + line for line in vectors]) + "\n")


@pytest.fixture(scope="module", params=["str", "int"])
def trained(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(id type, the example folder, its trained run folder): two epochs through ``recstack train``."""
    root = tmp_path_factory.mktemp(f"seed001_{request.param}")
    folder = root / "seed001"
    shutil.copytree(SEED001, folder)
    if request.param == "str":
        _string_post_ids(folder)
    run = root / "run"
    assert main(["train", str(folder / "config.yaml"), "--set", "trainer.epochs=2", "--set", f"output={run}"]) == 0
    return request.param, folder, run


def _brute_force(items: Path, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    table = pq.read_table(items)
    ids = np.asarray(table.column("post_id").to_pylist(), dtype=object)
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)  # (N, D)
    scores = users @ vectors.T  # (U, N)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]  # (U, K)
    score_of = [dict(zip(ids, row)) for row in scores]  # per user: id -> exact score
    return np.take_along_axis(scores, top, axis=1), ids, score_of


def test_seed001_export_index_and_query_with_the_users_ids(trained, tmp_path, capsys):
    id_type, folder, run = trained
    assert main(["export", str(run)]) == 0
    assert (run / "export" / "item_tower.onnx").is_file() and (run / "export" / "user_tower.onnx").is_file()
    items, users = tmp_path / "items.parquet", tmp_path / "users.parquet"
    assert main(["embed-items", str(run), "--output", str(items)]) == 0
    assert main(["embed-users", str(run), "--data", str(folder / "test.tsv"), "--user-column", "client_id", "--output", str(users)]) == 0

    item_table = pq.read_table(items)
    assert item_table.column_names == ["post_id", "vector"]  # the run's id column, not "item_id"
    raw = [line.split("\t")[2] for line in (folder / "train.tsv").read_text().splitlines()[1:]]
    expected_ids = set(raw) if id_type == "str" else {int(r) for r in raw}
    assert set(item_table.column("post_id").to_pylist()) == expected_ids  # every training item, once
    assert item_table.num_rows == len(expected_ids)
    assert main(["embed-items", str(run), "--output", str(tmp_path / "items.npy")]) == 0
    npy_ids = np.load(tmp_path / "items.ids.npy", allow_pickle=False)  # plain strings / ints, no pickle
    assert npy_ids.tolist() == item_table.column("post_id").to_pylist()

    user_vectors = np.stack(pq.read_table(users).column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)[:50]
    true_scores, all_ids, score_of = _brute_force(items, user_vectors)

    for backend, extra in (("faiss", []), ("milvus", ["--uri", str(tmp_path / "items.db"), "--kind", "flat"])):
        out = tmp_path / f"index_{backend}"
        capsys.readouterr()
        assert main(["index", str(run), "--backend", backend, "--output", str(out), *extra]) == 0
        kind = "string" if id_type == "str" else "integer"
        assert f"indexed {len(expected_ids)} items ({backend}, keyed by post_id, {kind} ids) in {out}" in capsys.readouterr().out
        source = json.loads((out / "index_source.json").read_text())
        assert (source["id_feature"], source["id_column"], source["id_type"]) == ("item_embed", "post_id", id_type)

        index = load_index(out)
        try:
            scores, found = index.search(user_vectors, k=K)  # (U, K)
        finally:
            index.close()
        if id_type == "str":
            assert found.dtype == object and all(isinstance(i, str) and i.startswith("p") for i in found.ravel())
        else:
            assert found.dtype == np.int64
        assert set(found.ravel().tolist()) <= expected_ids
        # top-10 equals brute force: the same scores, and each returned id truly has its score
        # (posts without a pretrained vector share one vector per topic, so ties are real)
        np.testing.assert_allclose(scores, true_scores, rtol=0, atol=1e-4, err_msg=backend)
        exact = np.array([[score_of[u][i] for i in row] for u, row in enumerate(found.tolist())])
        np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-4, err_msg=backend)
        assert all(len(set(row)) == K for row in found.tolist())

        # the same from the CLI: recstack query INDEX --vectors users.parquet
        results = tmp_path / f"top_{backend}.parquet"
        assert main(["query", str(out), "--vectors", str(users), "--k", str(K), "--output", str(results)]) == 0
        table = pq.read_table(results)
        assert table.column_names == ["client_id", "rank", "post_id", "score"]
        user_ids = pq.read_table(users).column("client_id").to_pylist()
        rows = table.slice(0, 50 * K)  # the first 50 users, as above
        assert rows.column("client_id").to_pylist() == [u for u in user_ids[:50] for _ in range(K)]
        np.testing.assert_allclose(rows.column("score").to_numpy().reshape(50, K), true_scores, rtol=0, atol=1e-4, err_msg=backend)
        got = np.array(rows.column("post_id").to_pylist(), dtype=object).reshape(50, K)
        exact = np.array([[score_of[u][i] for i in row] for u, row in enumerate(got.tolist())])
        np.testing.assert_allclose(exact, true_scores, rtol=0, atol=1e-4, err_msg=backend)
        assert {type(i) for i in got.ravel()} == {str if id_type == "str" else int}
        assert table.num_rows == len(user_ids) * K


def test_index_progress_bar_counts_every_item(trained, tmp_path):
    from io import StringIO

    from recstack.workflows.export import build_index_run

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    _, _, run = trained
    bar = Terminal()
    summary = build_index_run(run, catalog=None, backend="exact", output=tmp_path / "idx", progress_file=bar, batch_size=64)
    drawn = bar.getvalue()
    count = summary.items
    assert f"{count}/{count}" in drawn and "indexing post_id" in drawn and count == 400
    assert (summary.backend, summary.id_column) == ("exact", "post_id")
