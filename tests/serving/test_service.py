"""The two-stage service equals recall-then-rank computed offline; swapping models drops nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recstack.data.sources import DataSource
from recstack.export.run_folder import load_run
from recstack.serving.catalogue import Catalogue
from recstack.serving.service import RecommendationService
from recstack.serving.types import RecommendRequest
from recstack.workflows.predict import score_rows
from recstack.workflows.retrieval import embed_items, embed_users


def offline_recommend(tiny_runs: dict[str, Path], user_id: int, history: list[int], *, n: int, k: int, tmp: Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Recall-then-rank through the batch workflows: files in, files through, no service code."""
    items = pq.read_table(tiny_runs["catalog"])
    users = pq.read_table(tiny_runs["users"]).to_pylist()
    user = next(u for u in users if u["user_id"] == user_id)
    genre_of = dict(zip(items.column("item_id").to_pylist(), items.column("genre").to_pylist()))
    hist_genres = [genre_of[i] for i in history]
    row = {**user, "hist_item_ids": [history], "hist_genres": [hist_genres]}
    pq.write_table(pa.table({k_: v if isinstance(v, list) else [v] for k_, v in row.items()}), tmp / "user.parquet")

    retrieval = load_run(tiny_runs["retrieval"])
    item_ids, item_vectors = embed_items(retrieval.model, retrieval.preprocessor, DataSource.from_config(str(tiny_runs["catalog"])))
    _, user_vectors = embed_users(retrieval.model, retrieval.preprocessor, DataSource.from_config(str(tmp / "user.parquet")))
    scores = item_vectors @ user_vectors[0]  # (N_items,)
    scores[np.isin(item_ids, history)] = -np.inf
    recalled = np.argsort(-scores, kind="stable")[:n]

    ranker = load_run(tiny_runs["ranker"])
    candidates = items.take(pa.array(recalled))
    latest = pq.read_table(tiny_runs["root"] / "data" / "ctr_train.parquet").to_pylist()
    last_user = [r for r in latest if r["user_id"] == user_id][-1]
    last_item = {r["item_id"]: r for r in latest}
    rows = []
    for item in candidates.to_pylist():
        rows.append({
            **item, **user, "hist_item_ids": history, "hist_genres": hist_genres, "hist_liked_item_ids": history,
            **{c: last_user[c] for c in ("user_count", "user_pos_rate", "user_mean_rating")},
            **{c: last_item.get(item["item_id"], {}).get(c) for c in ("item_count", "item_pos_rate", "item_mean_rating")},
        })
    pq.write_table(pa.Table.from_pylist(rows), tmp / "rank.parquet")
    probs = score_rows(ranker, DataSource.from_config(str(tmp / "rank.parquet")))
    top = np.argsort(-probs, kind="stable")[:k]
    return item_ids[recalled[top]].tolist(), scores[recalled[top]], probs[top]


@pytest.mark.parametrize("user_id, n", [(1, 100), (5, 10)])
def test_two_stage_equals_offline_recall_then_rank(service: RecommendationService, tiny_runs: dict[str, Path], tmp_path: Path, user_id: int, n: int) -> None:
    history = service.catalogue.histories.get(user_id).tolist()
    [response] = service.recommend([RecommendRequest(user_id=user_id, k=5, candidates=n)])
    ids, recall, probs = offline_recommend(tiny_runs, user_id, history, n=n, k=5, tmp=tmp_path)
    assert [i.item_id for i in response.items] == ids
    np.testing.assert_allclose([i.recall_score for i in response.items], recall, atol=1e-5)
    np.testing.assert_allclose([i.rank_score for i in response.items], probs, atol=1e-5)


def test_a_batch_equals_one_request_at_a_time(service: RecommendationService) -> None:
    requests = [RecommendRequest(user_id=u, k=4, candidates=20 + u) for u in range(1, 9)]
    batched = service.recommend(requests)
    for request, answer in zip(requests, batched):
        [alone] = service.recommend([request])
        assert [i.item_id for i in answer.items] == [i.item_id for i in alone.items]
        np.testing.assert_allclose([i.rank_score for i in answer.items], [i.rank_score for i in alone.items], atol=1e-6)


def test_history_keeps_the_last_50_positives_in_time_order(tiny_runs: dict[str, Path]) -> None:
    catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=None, history=tiny_runs["history"], history_length=3)
    train = pq.read_table(tiny_runs["history"]).to_pylist()
    expected = [r["item_id"] for r in sorted(train, key=lambda r: r["timestamp"]) if r["user_id"] == 1][-3:]
    assert catalogue.histories.get(1).tolist() == expected


def test_swap_replaces_models_without_failing_requests(tiny_runs: dict[str, Path]) -> None:
    catalogue = Catalogue.from_files(catalog=tiny_runs["catalog"], users=tiny_runs["users"], history=tiny_runs["history"])
    service = RecommendationService(retrieval_run=tiny_runs["retrieval"], ranking_run=tiny_runs["ranker"], catalogue=catalogue, backend="exact")
    before = service.models
    failures: list[BaseException] = []
    answered = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                answered.append(len(service.recommend([RecommendRequest(user_id=2, k=5)])[0].items))
            except BaseException as error:  # noqa: BLE001 - any failure fails the test
                failures.append(error)

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    service.swap(tiny_runs["retrieval"], tiny_runs["ranker"])
    stop.set()
    for w in workers:
        w.join()
    assert not failures
    assert answered and set(answered) == {5}
    assert service.models is not before


def test_served_user_tower_and_ranker_inputs_equal_eager_pytorch_on_raw_rows(service: RecommendationService) -> None:
    """The ONNX Runtime user tower and the cached item-feature table change no number."""
    models = service.models
    assert models.user_encoder is not None and models.user_encoder.backend == "onnxruntime"
    example, pairs = service._examples(models)
    np.testing.assert_allclose(models.user_encoder(example), models.retrieval.model.encode_user(example).detach().numpy(), atol=1e-5)

    requests = [RecommendRequest(user_id=u) for u in (1, 2)]
    user_rows = service._user_rows(models, requests, [service._history(r) for r in requests])
    owner, item_ids = np.array([0, 0, 1, 1, 1]), service.catalogue.items.keys[[0, 3, 1, 2, 3]]
    cached = models.ranker_inputs.batch(user_rows, owner, item_ids)
    items = models.item_side.lookup(item_ids, models.ranker_inputs.item_columns)
    rows = user_rows.take(pa.array(owner))
    for name in items.column_names:
        rows = rows.append_column(name, items.column(name)) if name not in rows.column_names else rows
    full = models.ranker.preprocessor.transform(rows.select(models.ranker_columns), with_label=False)
    for kind in ("ids", "sequences", "weights", "dense"):
        assert getattr(cached, kind).keys() == getattr(full, kind).keys()
        for name, tensor in getattr(full, kind).items():
            assert torch.equal(getattr(cached, kind)[name], tensor), name


def test_served_ranker_equals_eager_pytorch(service: RecommendationService) -> None:
    """ONNX Runtime serves the ranker only where it exports and matches; the probabilities do not move."""
    models = service.models
    _, pairs = service._examples(models)
    scorer = models.ranker_scorer
    assert scorer is not None and scorer.backend in ("onnxruntime", "eager")
    assert scorer.backend == "onnxruntime" or scorer.failure
    with torch.no_grad():
        eager = service._task.predict(models.ranker.model, pairs).numpy()
    np.testing.assert_allclose(scorer(pairs), eager, atol=1e-5)
