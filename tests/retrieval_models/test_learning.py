"""Two-tower models learn a planted user-item affinity (5 clusters) far better than popularity."""

import pytest
import torch

from recstack.evaluation.retrieval_metrics import evaluate_retrieval
from recstack.models.dssm import TwoTower
from recstack.models.youtube_dnn import YoutubeDNN
from recstack.tasks.retrieval import InBatchSoftmaxTask

from .helpers import PlantedClusters


@pytest.fixture(scope="module")
def data() -> PlantedClusters:
    return PlantedClusters(seed=0)


def _train(model, task, data: PlantedClusters, *, epochs: int, lr: float, batch_size: int = 256) -> None:
    batch = data.train_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=g)
        for start in range(0, len(batch), batch_size):
            loss = task.loss(model, batch.select(order[start : start + batch_size]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def _recall_at_10(user_vectors, item_vectors, data: PlantedClusters) -> float:
    metrics = evaluate_retrieval(user_vectors, item_vectors, data.targets.numpy(), exclude=data.exclude(), ks=(10,))
    return metrics["recall@10"]


def _popularity_recall(data: PlantedClusters) -> float:
    counts = data.item_counts()[2:].float()  # (N,)
    jitter = 1e-3 * torch.rand(counts.shape, generator=torch.Generator().manual_seed(0))  # break ties fairly
    return _recall_at_10(torch.ones(data.num_users, 1), (counts + jitter).unsqueeze(1), data)


def test_popularity_is_a_weak_baseline(data) -> None:
    assert _popularity_recall(data) < 0.1


def test_dssm_learns_planted_clusters(data) -> None:
    model = TwoTower(
        feature_map=data.feature_map,
        params=TwoTower.Params(features=("user_id", "item_id"), hidden_dims=(64, 32)),
    )
    task = InBatchSoftmaxTask(temperature=0.1).set_item_frequencies(data.item_counts())
    _train(model, task, data, epochs=15, lr=3e-3)
    with torch.no_grad():
        recall = _recall_at_10(model.encode_user(data.user_batch()), model.encode_item_rows(data.item_rows()), data)
    print(f"dssm recall@10 = {recall:.3f}, popularity = {_popularity_recall(data):.3f}")
    # a perfect cluster model ranks the target among 30 candidates: recall@10 ~ 1/3
    assert recall > 0.25
    assert recall > 3 * _popularity_recall(data)


def test_youtube_dnn_learns_planted_clusters_and_keeps_cold_items_down(data) -> None:
    model = YoutubeDNN(
        feature_map=data.feature_map,
        params=YoutubeDNN.Params(features=("hist_item_ids", "item_id"), hidden_dims=(64, 32)),
    )
    task = InBatchSoftmaxTask(temperature=1.0).set_item_frequencies(data.item_counts())
    _train(model, task, data, epochs=15, lr=3e-3)
    with torch.no_grad():
        users = model.encode_user(data.user_batch())  # (U, D)
        items = model.encode_item_rows(data.item_rows())  # (N, D)
    recall = _recall_at_10(users, items, data)
    print(f"youtube_dnn recall@10 = {recall:.3f}, popularity = {_popularity_recall(data):.3f}")
    assert recall > 0.25
    assert recall > 3 * _popularity_recall(data)
    # items never seen as positives keep their zero vector: they never reach anyone's top 10
    scores = users @ items.T  # (U, N)
    top10 = scores.topk(10, dim=1).indices
    assert not torch.isin(top10, data.cold_items).any()
    assert torch.all(items[data.cold_items] == 0)
