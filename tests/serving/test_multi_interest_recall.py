"""End to end with K vectors per user: an event table -> sequences -> MIND (K = 3) trained ->
evaluated (max over interests) -> exported (ONNX user tower (B, K, D) == torch) -> indexed ->
embed-users (B, K, D) -> query and ``/recommend`` (K searches merged by max, deduped), each
checked against a brute-force merge of the model's own vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.datasets.sequence_split import SequenceSplitSpec, write_sequence_split
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.export.run_folder import load_run
from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService, _embed_catalogue
from recstack.serving.types import RecommendRequest
from recstack.workflows.export import build_index_run, embed_users_run, export_run
from recstack.workflows.query import query_index, read_user_vectors
from recstack.workflows.retrieval import embed_items, embed_users, evaluate_retrieval_run
from recstack.workflows.train import train_run

from .tiny_runs import ROOT, write_tiny_data

pytestmark = pytest.mark.slow
MAX_LEN, K = 8, 3


@pytest.fixture(scope="module")
def mind_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multi_interest_recall")
    data = write_tiny_data(root / "data")
    sequences = root / "sequences"
    write_sequence_split(DataSource(paths=(str(data / "ctr_train.parquet"),)), sequences, SequenceSplitSpec(max_len=MAX_LEN),
                         extra_tables={"items": pq.read_table(data / "items.parquet")})  # fmt: skip
    config = RunConfig.from_dict({
        "name": "tiny_mind",
        "data": {"train": str(sequences / "train.parquet"), "valid": str(sequences / "valid.parquet"),
                 "test": str(sequences / "test.parquet"), "catalog": str(sequences / "items.parquet")},
        "schema": str(ROOT / "schemas/movielens_sequences.yaml"),
        "task": {"type": "retrieval", "loss": "full_softmax"},
        "model": {"name": "mind", "params": {"num_interests": K, "dynamic_interests": True}},
        "loader": {"batch_size": 16},
        "trainer": {"epochs": 2, "lr": 0.005, "monitor": "ndcg@10"},
        "evaluation": {"ks": [10]},
        "output": str(root / "mind"),
    })  # fmt: skip
    train_run(config, log=lambda _: None)
    din = RunConfig.from_dict({
        "name": "tiny_din", "data": {"train": str(data / "ctr_train.parquet"), "valid": str(data / "ctr_valid.parquet")},
        "schema": str(ROOT / "schemas/movielens_ctr.yaml"), "task": {"type": "binary"},
        "model": {"name": "din", "params": {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}], "attention_hidden_dims": [8], "hidden_dims": [16]}},
        "loader": {"batch_size": 128}, "trainer": {"epochs": 1, "lr": 0.01, "monitor": "auc"}, "output": str(root / "din"),
    })  # fmt: skip
    train_run(din, log=lambda _: None)
    return {"root": root, "run": root / "mind", "ranker": root / "din", "sequences": sequences, "data": data}


def test_evaluation_scores_by_the_best_interest(mind_run: dict[str, Path]) -> None:
    run, sequences = load_run(mind_run["run"]), mind_run["sequences"]
    test = DataSource(paths=(str(sequences / "test.parquet"),))
    metrics = evaluate_retrieval_run(run, test, seen=DataSource(paths=(str(sequences / "seen.parquet"),)))
    # brute force: each user's K vectors score every item, the best interest counts
    item_ids, items = embed_items(run.model, run.preprocessor, DataSource(paths=(str(sequences / "items.parquet"),)))
    users_ids, users = embed_users(run.model, run.preprocessor, test)
    assert users.shape == (len(users_ids), K, items.shape[1])
    scores = np.einsum("ukd,nd->ukn", users, items).max(axis=1)  # (U, N)
    rows = {int(i): r for r, i in enumerate(item_ids)}
    table, seen = pq.read_table(sequences / "test.parquet"), pq.read_table(sequences / "seen.parquet")
    seen_of = dict(zip(seen["user_id"].to_pylist(), seen["seen_item_ids"].to_pylist()))
    targets = [rows[i] for i in table["item_id"].to_pylist()]
    inputs = table["hist_item_ids"].to_pylist()  # the test input's items are excluded too
    excluded = [sorted({rows[i] for i in [*seen_of.get(u, []), *h]} - {t}) for u, h, t in zip(table["user_id"].to_pylist(), inputs, targets)]
    exclude = (np.r_[0, np.cumsum([len(e) for e in excluded])], np.array([i for e in excluded for i in e], dtype=np.int64))
    expected = evaluate_ranked_scores(lambda r: scores[r[0] : r[-1] + 1].copy(), targets, exclude=exclude, ks=(10,))
    assert metrics["users"] == expected["users"] and metrics["recall@10"] == pytest.approx(expected["recall@10"])
    assert metrics["ndcg@10"] == pytest.approx(expected["ndcg@10"])


def test_export_index_embed_users_and_query(mind_run: dict[str, Path]) -> None:
    run_dir, sequences, root = mind_run["run"], mind_run["sequences"], mind_run["root"]
    report = export_run(run_dir)
    assert report["user"]["inputs"] == ["hist_item_ids"] and report["user"]["max_abs_error"] < 1e-5  # (B, K, D) graph
    build_index_run(run_dir, catalog=None, backend="exact", output=root / "index", progress=False)
    for name in ("users.parquet", "users.npy"):
        count = embed_users_run(run_dir, data=sequences / "test.parquet", output=root / name)
        vectors = read_user_vectors(root / name)
        assert vectors.vectors.shape == (count, K, 64)
    result = query_index(root / "index", root / "users.parquet", k=5)
    run = load_run(run_dir)
    item_ids, items = embed_items(run.model, run.preprocessor, DataSource(paths=(str(sequences / "items.parquet"),)))
    best = np.einsum("ukd,nd->ukn", vectors.vectors, items).max(axis=1)  # (U, N)
    top = np.argsort(-best, axis=1, kind="stable")[:, :5]
    assert np.array_equal(result.item_ids, item_ids[top])  # K searches merged by max == the best interest's ranking
    assert np.allclose(result.scores, np.take_along_axis(best, top, axis=1), atol=1e-5)


def test_served_recall_merges_the_interests(mind_run: dict[str, Path]) -> None:
    data = mind_run["data"]
    catalogue = Catalogue.from_files(catalog=data / "items.parquet", users=data / "users.parquet", history=data / "ctr_train.parquet", history_length=MAX_LEN)
    service = RecommendationService(retrieval_run=mind_run["run"], ranking_run=mind_run["ranker"], catalogue=catalogue, backend="exact")
    assert service.models.user_encoder.backend == "onnxruntime"  # the (B, K, D) tower, checked equal
    history = [int(i) for i in catalogue.histories.get(3)]
    response = service.recommend([RecommendRequest(user_id=3, k=40, candidates=40)])[0]
    assert response.fallback is None
    ids = [i.item_id for i in response.items]
    assert len(ids) == len(set(ids)) and not set(ids) & set(history)  # deduped, the history excluded
    models = service.models
    rows = service._user_rows(models, [RecommendRequest(user_id=3)], [np.array(history)]).select(models.retrieval_columns)
    batch = models.retrieval.preprocessor.transform(rows.to_batches()[0], features=models.user_features, with_label=False)
    with torch.no_grad():
        interests = models.retrieval.model.encode_user(batch)[0].numpy()  # (K, D)
        catalogue_ids, vectors = _embed_catalogue(models.retrieval, catalogue.items)  # (N,), (N, D): what the index holds
    best = (interests @ vectors.T).max(axis=0)  # (N,) the best interest's score of each item
    best[np.isin(catalogue_ids, history)] = -np.inf
    expected = {int(i): float(s) for i, s in zip(catalogue_ids, best) if np.isfinite(s)}
    expected = dict(sorted(expected.items(), key=lambda kv: -kv[1])[:40])
    recall = {i.item_id: i.recall_score for i in response.items}
    assert set(recall) == set(expected)  # the candidates: the top 40 by best interest, each once
    assert all(recall[i] == pytest.approx(expected[i], abs=1e-5) for i in recall)  # scored by the best interest
