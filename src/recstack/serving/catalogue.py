"""The catalogue a service recommends from: items, users and their histories, keyed by raw id.

Items are keyed by the retrieval run's item-id column (``item_column``: ``item_id`` in
MovieLens, ``post_id`` in seed 001; ``recstack serve`` reads it from the run), whose values,
integers or strings, key the catalogue, the histories and the index unchanged.

Example::

    catalogue = Catalogue.from_files(catalog="items.parquet", users="users.parquet", history="train.parquet")
    catalogue.histories.get(42)  # user 42's last 50 positive item ids, oldest first
    Catalogue.from_files(catalog="posts.parquet", users=None, history="events.parquet", item_column="post_id")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa

from recstack.data.sources import DataSource
from recstack.serving.feature_table import FeatureTable, Histories, read_table

# History columns a schema may use, and the catalogue column each one lists (None: the item ids).
HISTORY_COLUMNS: Mapping[str, str | None] = {
    "hist_item_ids": None,
    "hist_liked_item_ids": None,
    "hist_genres": "genre",
    "hist_liked_genres": "genre",
}


@dataclass(frozen=True)
class Catalogue:
    """Items (id, title, genres, item features) and users (user features), keyed by raw id."""

    items: FeatureTable
    users: FeatureTable
    histories: Histories
    title_column: str = "title"
    genres_column: str = "genres"

    @classmethod
    def from_files(cls, *, catalog: str | Path, users: str | Path | None, history: str | Path | None, item_column: str = "item_id", user_column: str = "user_id", history_label_column: str | None = "label", history_time_column: str = "timestamp", history_length: int = 50) -> "Catalogue":
        """``history_label_column``: a history row counts when its value is > 0 (None, or a column the
        file lacks: every row counts); ``history_time_column`` orders each user's history."""
        items = FeatureTable(read_table(DataSource.from_config(str(catalog), key="catalog")), key=item_column)
        user_table = read_table(DataSource.from_config(str(users), key="users")) if users else pa.table({user_column: pa.array([], pa.int64())})
        if history:
            histories = Histories.from_source(DataSource.from_config(str(history), key="history"), user_column=user_column, item_column=item_column, time_column=history_time_column, label_column=history_label_column, maxlen=history_length)
        else:
            histories = Histories(np.zeros(0, np.int64), np.zeros(0, items.keys.dtype), maxlen=history_length)
        return cls(items=items, users=FeatureTable(user_table, key=user_column), histories=histories)
