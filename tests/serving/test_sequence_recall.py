"""End to end: an event table -> sequences -> SASRec trained -> evaluated -> exported -> indexed ->
queried -> served as the recall stage of ``/recommend`` (DIN ranks), with the bad inputs of issue 15."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.datasets.sequence_split import SequenceSplitSpec, write_sequence_split
from recstack.export.run_folder import load_run
from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest, RequestError
from recstack.workflows.export import build_index_run, embed_users_run, export_run
from recstack.workflows.query import query_index
from recstack.workflows.retrieval import evaluate_retrieval_run
from recstack.workflows.train import train_run

from .tiny_runs import ROOT, write_tiny_data

pytestmark = pytest.mark.slow
MAX_LEN = 8


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sequence_recall")
    data = write_tiny_data(root / "data")
    sequences = root / "sequences"
    spec = SequenceSplitSpec(max_len=MAX_LEN)
    stats = write_sequence_split(DataSource(paths=(str(data / "ctr_train.parquet"),)), sequences, spec, partitions=3,
                                 extra_tables={"items": pq.read_table(data / "items.parquet")})  # fmt: skip
    assert stats.truncated_test_rows > 0  # the tiny users have more than MAX_LEN events: counted
    config = RunConfig.from_dict({
        "name": "tiny_sasrec",
        "data": {"train": str(sequences / "train.parquet"), "valid": str(sequences / "valid.parquet"),
                 "test": str(sequences / "test.parquet"), "catalog": str(sequences / "items.parquet")},
        "schema": str(ROOT / "schemas/movielens_sequences.yaml"),
        "task": {"type": "retrieval", "loss": "full_softmax"},
        "model": {"name": "sasrec", "params": {"num_layers": 1, "dropout": 0.1}},
        "loader": {"batch_size": 16},
        "trainer": {"epochs": 2, "lr": 0.005, "monitor": "ndcg@10"},
        "evaluation": {"ks": [10]},
        "output": str(root / "sasrec"),
    })  # fmt: skip
    metrics = train_run(config, log=lambda _: None)
    assert {"test_recall@10", "test_ndcg@10"} <= set(metrics) or "test" in str(metrics)
    din = RunConfig.from_dict({
        "name": "tiny_din", "data": {"train": str(data / "ctr_train.parquet"), "valid": str(data / "ctr_valid.parquet")},
        "schema": str(ROOT / "schemas/movielens_ctr.yaml"), "task": {"type": "binary"},
        "model": {"name": "din", "params": {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}], "attention_hidden_dims": [8], "hidden_dims": [16]}},
        "loader": {"batch_size": 128}, "trainer": {"epochs": 1, "lr": 0.01, "monitor": "auc"}, "output": str(root / "din"),
    })  # fmt: skip
    train_run(din, log=lambda _: None)
    return {"root": root, "run": root / "sasrec", "ranker": root / "din", "sequences": sequences, "data": data}


def test_evaluate_export_index_query(sasrec_run: dict[str, Path]) -> None:
    run, sequences, root = sasrec_run["run"], sasrec_run["sequences"], sasrec_run["root"]
    metrics = evaluate_retrieval_run(load_run(run), DataSource(paths=(str(sequences / "test.parquet"),)))
    users = pq.read_table(sequences / "test.parquet").num_rows
    assert metrics["users"] == users and 0 <= metrics["recall@10"] <= 1 and metrics["ndcg@10"] <= metrics["recall@10"]
    report = export_run(run)
    assert report["user"]["inputs"] == ["hist_item_ids"] and report["user"]["max_abs_error"] < 1e-5
    assert report["item"]["inputs"] == ["item_id"]
    summary = build_index_run(run, catalog=None, backend="exact", output=root / "index", progress=False)
    assert summary.items == pq.read_table(sequences / "items.parquet").num_rows and summary.id_column == "item_id"
    assert embed_users_run(run, data=sequences / "test.parquet", output=root / "users.parquet") == users
    result = query_index(root / "index", root / "users.parquet", k=5)
    assert result.item_ids.shape == (users, 5)


def test_served_as_the_recall_stage(sasrec_run: dict[str, Path]) -> None:
    data = sasrec_run["data"]
    catalogue = Catalogue.from_files(catalog=data / "items.parquet", users=data / "users.parquet", history=data / "ctr_train.parquet", history_length=MAX_LEN)
    service = RecommendationService(retrieval_run=sasrec_run["run"], ranking_run=sasrec_run["ranker"], catalogue=catalogue, backend="exact")
    assert service.models.user_encoder.backend == "onnxruntime"  # the exported SASRec user tower, checked equal
    stored = service.recommend([RecommendRequest(user_id=3, k=5)])[0]
    assert len(stored.items) == 5 and stored.fallback is None
    history = [int(i) for i in catalogue.histories.get(3)]
    explicit = service.recommend([RecommendRequest(user_id=3, history=history, k=5)])[0]
    assert [i.item_id for i in explicit.items] == [i.item_id for i in stored.items]  # the history is the sequence input
    anonymous = service.recommend([RecommendRequest(history=history, k=5)])[0]  # a session without a user
    assert len(anonymous.items) == 5 and anonymous.fallback is None
    reordered = service.recommend([RecommendRequest(user_id=3, history=history[::-1], k=5)])[0]
    assert [i.recall_score for i in reordered.items] != [i.recall_score for i in explicit.items]  # order matters
    sixty = [*range(1, 41), *range(1, 21)]  # longer than the schema's maxlen 50: the last 50 kept
    long = service.recommend([RecommendRequest(history=sixty, k=5, exclude_seen=False)])[0]
    last = service.recommend([RecommendRequest(history=sixty[-50:], k=5, exclude_seen=False)])[0]
    assert [(i.item_id, i.recall_score) for i in long.items] == [(i.item_id, i.recall_score) for i in last.items]
    unknown = service.recommend([RecommendRequest(history=[999_999, history[-1]], k=5)])[0]  # OOV row, no crash
    assert len(unknown.items) == 5
    empty = service.recommend([RecommendRequest(history=[], k=5)])[0]
    assert empty.fallback == "popular"
    with pytest.raises(RequestError, match="history"):
        service.recommend([RecommendRequest(history=["x", 2], k=5)])


def test_a_ranking_run_is_refused_where_a_retrieval_run_is_needed(sasrec_run: dict[str, Path]) -> None:
    from recstack.errors import ConfigError

    ranker, data = sasrec_run["ranker"], sasrec_run["data"]
    with pytest.raises(ConfigError, match=rf"{ranker} \(model 'din'\): needs a retrieval run .* got a ranking model DIN"):
        export_run(ranker)
    with pytest.raises(ConfigError, match="needs a retrieval run"):
        build_index_run(ranker, catalog=None, backend="exact", output=sasrec_run["root"] / "no_index", progress=False)
    catalogue = Catalogue.from_files(catalog=data / "items.parquet", users=None, history=data / "ctr_train.parquet")
    with pytest.raises(ConfigError, match="needs a retrieval run"):
        RecommendationService(retrieval_run=ranker, ranking_run=ranker, catalogue=catalogue, backend="exact")
