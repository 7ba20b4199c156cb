"""A small feature map with every feature kind on both sides, and random batches for it."""

import torch

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap, TableInfo
from recstack.schema import Schema

NUM_ITEM_ROWS = 30


def rich_feature_map() -> FeatureMap:
    """Every feature kind on both sides; ``item_id`` and ``hist_item_ids`` share table ``item``."""
    schema = Schema.from_dict({
        "tables": {"item": {"dim": 8}, "user": {"dim": 8}, "cat": {"dim": 4}, "tag": {"dim": 4}},
        "features": [
            {"name": "user_id", "kind": "categorical", "table": "user", "side": "user"},
            {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 5, "side": "user"},
            {"name": "tags", "kind": "sequence", "table": "tag", "maxlen": 3, "side": "user",
             "weights": "pairs", "pooling": "weighted_mean"},
            {"name": "age", "kind": "numeric"},  # context: goes to the user tower
            {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
            {"name": "item_cat", "kind": "categorical", "table": "cat", "side": "item"},
            {"name": "item_vec", "kind": "vector", "dim": 3, "side": "item"},
        ],
    })
    tables = {
        "item": TableInfo(name="item", num_rows=NUM_ITEM_ROWS, dim=8),
        "user": TableInfo(name="user", num_rows=20, dim=8),
        "cat": TableInfo(name="cat", num_rows=6, dim=4),
        "tag": TableInfo(name="tag", num_rows=7, dim=4),
    }
    return FeatureMap(schema=schema, tables=tables)



def make_batch(batch_size: int, *, generator: torch.Generator | None = None) -> Batch:
    """A random batch for the ``feature_map`` fixture, with padding and an empty history."""
    g = generator or torch.Generator().manual_seed(1)
    hist = torch.randint(2, NUM_ITEM_ROWS, (batch_size, 5), generator=g)
    lengths = torch.randint(0, 6, (batch_size,), generator=g)
    hist = hist.masked_fill(torch.arange(5) >= lengths.unsqueeze(1), 0)  # (B, 5), left-aligned
    tags = torch.randint(2, 7, (batch_size, 3), generator=g)
    tags[0] = 0  # a row without tags
    tag_weights = torch.rand(batch_size, 3, generator=g).masked_fill(tags == 0, 0.0)
    return Batch(
        ids={
            "user_id": torch.randint(2, 20, (batch_size,), generator=g),
            "item_id": torch.randint(2, NUM_ITEM_ROWS, (batch_size,), generator=g),
            "item_cat": torch.randint(2, 6, (batch_size,), generator=g),
        },
        sequences={"hist_item_ids": hist, "tags": tags},
        weights={"tags": tag_weights},
        dense={"age": torch.randn(batch_size, generator=g), "item_vec": torch.randn(batch_size, 3, generator=g)},
        label=torch.ones(batch_size),
    )


class PlantedClusters:
    """Users and items in 5 clusters; each user interacts only with items of its own cluster.

    200 users and 300 items (item i in cluster i // 60; user u in cluster u % 5). In every
    cluster 10 items are cold: never anyone's positive. Each user has 20 training items and one
    held-out target, all distinct warm items of its cluster. Item index i is table row i + 2.
    """

    num_users, num_items, num_clusters, cold_per_cluster, train_per_user = 200, 300, 5, 10, 20

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        per_cluster = self.num_items // self.num_clusters
        warm = per_cluster - self.cold_per_cluster
        cluster = torch.arange(self.num_users) % self.num_clusters  # (U,)
        picks = torch.rand(self.num_users, warm, generator=g).argsort(dim=1)[:, : self.train_per_user + 1]
        items = cluster.unsqueeze(1) * per_cluster + self.cold_per_cluster + picks  # (U, 21) item indices
        self.train_items, self.targets = items[:, :-1], items[:, -1]  # (U, 20), (U,)
        cluster_starts = torch.arange(self.num_clusters).unsqueeze(1) * per_cluster  # (5, 1)
        self.cold_items = (cluster_starts + torch.arange(self.cold_per_cluster)).reshape(-1)  # (50,)
        self.feature_map = self._feature_map()

    def _feature_map(self) -> FeatureMap:
        schema = Schema.from_dict({
            "tables": {"item": {"dim": 32}, "user": {"dim": 32}},
            "features": [
                {"name": "user_id", "kind": "categorical", "table": "user", "side": "user"},
                {"name": "hist_item_ids", "kind": "sequence", "table": "item", "side": "user",
                 "maxlen": self.train_per_user},
                {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
            ],
        })
        tables = {
            "item": TableInfo(name="item", num_rows=self.num_items + 2, dim=32),
            "user": TableInfo(name="user", num_rows=self.num_users + 2, dim=32),
        }
        return FeatureMap(schema=schema, tables=tables)

    def train_batch(self) -> Batch:
        """Every (user, training item) pair; the history leaves the row's own item out."""
        U, T = self.train_items.shape
        users = torch.arange(U).repeat_interleave(T)  # (U*T,)
        history = (self.train_items + 2).repeat_interleave(T, dim=0)  # (U*T, T) table rows
        own = torch.arange(T).repeat(U)  # (U*T,) position of the row's item in its history
        history[torch.arange(U * T), own] = 0  # padding
        return Batch(
            ids={"user_id": users + 2, "item_id": self.train_items.reshape(-1) + 2},
            sequences={"hist_item_ids": history},
            label=torch.ones(U * T),
        )

    def user_batch(self) -> Batch:
        """One row per user with the full training history, for scoring."""
        return Batch(
            ids={"user_id": torch.arange(self.num_users) + 2},
            sequences={"hist_item_ids": self.train_items + 2},
        )

    def item_rows(self) -> torch.Tensor:
        return torch.arange(self.num_items) + 2  # (N,)

    def item_counts(self) -> torch.Tensor:
        """``(N + 2,)`` training occurrences by item table row."""
        return torch.bincount(self.train_items.reshape(-1) + 2, minlength=self.num_items + 2)

    def exclude(self) -> tuple:
        indptr = torch.arange(self.num_users + 1) * self.train_per_user
        return indptr.numpy(), self.train_items.reshape(-1).numpy()
