"""Tiny models and planted-signal data for the training tests."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from recstack.data.batch import Batch

DIM = 8
NUM_ITEMS = 50


class LogisticRegression(nn.Module):
    """logits = x·w + b over ``batch.dense["x"]`` (B, D)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch.dense["x"]).squeeze(-1)  # (B,)


class DropoutMLP(nn.Module):
    """An MLP with dropout, so training consumes the torch RNG (what resume must replay)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, batch: Batch) -> Tensor:
        return self.mlp(batch.dense["x"]).squeeze(-1)  # (B,)


class SparseItemModel(nn.Module):
    """An item-id embedding with sparse gradients plus a dense linear over x."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(NUM_ITEMS, 4, sparse=True)
        self.item_bias = nn.Linear(4, 1)
        self.linear = nn.Linear(dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        item = self.item_embedding(batch.ids["item"])  # (B, 4)
        return (self.item_bias(item) + self.linear(batch.dense["x"])).squeeze(-1)  # (B,)


def planted_data(n: int = 512, seed: int = 0) -> Batch:
    """Labels drawn from a logistic model of x and of the item id."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=generator)  # (B, D)
    item = torch.randint(0, NUM_ITEMS, (n,), generator=generator)  # (B,)
    item_effect = torch.randn(NUM_ITEMS, generator=generator) * 2.0  # (NUM_ITEMS,)
    logits = x @ torch.linspace(-2.0, 2.0, DIM) + item_effect[item]  # (B,)
    label = torch.bernoulli(torch.sigmoid(logits), generator=generator)  # (B,)
    return Batch(ids={"item": item}, dense={"x": x}, label=label)


def epoch_batches(data: Batch, batch_size: int = 64) -> Callable[[int], list[Batch]]:
    """Shuffled with a generator seeded by the epoch: a pure function of ``epoch``."""

    def train_batches(epoch: int) -> list[Batch]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1000 + epoch))
        return [data.select(order[i : i + batch_size]) for i in range(0, len(data), batch_size)]

    return train_batches


def global_rng_batches(data: Batch, batch_size: int = 64) -> Callable[[int], list[Batch]]:
    """Shuffled with the global torch RNG at call time (as DataLoader(shuffle=True) does)."""

    def train_batches(epoch: int) -> list[Batch]:
        order = torch.randperm(len(data))
        return [data.select(order[i : i + batch_size]) for i in range(0, len(data), batch_size)]

    return train_batches


def lazy_noisy_batches(data: Batch, batch_size: int = 64) -> Callable[[int], Iterator[Batch]]:
    """An unsized generator that draws feature noise from the global RNG batch by batch."""

    def train_batches(epoch: int) -> Iterator[Batch]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(data), batch_size):
            batch = data.select(order[i : i + batch_size])
            noise = 0.1 * torch.randn_like(batch.dense["x"])  # (B, D)
            yield Batch(ids=batch.ids, dense={"x": batch.dense["x"] + noise}, label=batch.label)

    return train_batches


def auc(scores: Tensor, labels: Tensor) -> float:
    """Rank-based ROC AUC (scores are continuous: no ties)."""
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_evaluator(data: Batch, task) -> Callable[[nn.Module], dict[str, float]]:
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"auc": auc(task.predict(model, data), data.label)}

    return evaluate


def scripted_evaluator(values: list[float], name: str = "auc"):
    """Returns ``values`` in turn and snapshots the weights it was shown (one per epoch)."""
    snapshots: list[dict[str, Tensor]] = []

    def evaluate(model: nn.Module) -> dict[str, float]:
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {name: values[len(snapshots) - 1]}

    return evaluate, snapshots


def same_weights(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
