"""The ranker's batch of (user, candidate) pairs, assembled from two pre-transformed halves.

Shape legend: I catalogue items, B requests, C candidates of the whole batch, L sequence length.

Every ranker feature reads either item columns only or user columns only, and the
preprocessor transforms each row on its own (vocabulary lookups, fitted normalisers, sequences
padded to a fixed ``maxlen``). So the item half of every catalogue row is transformed ONCE, at
start-up, into a tensor table; a request transforms only its B user rows, and the C candidate
rows are two ``index_select`` s, with no per-request Arrow table of C rows and no C-fold
re-transform of the same user's 50-item history::

    item batch (I + 1 rows, the last an all-null row for an item the catalogue lacks)
          --index_select(item row of each candidate)-->  (C, ...)   \
                                                                      } one Batch of C rows
    user batch (B rows, transformed per request)                      /
          --index_select(owner request of each candidate)--> (C, ...)

Example::

    inputs = RankerInputs(ranker=run, items=item_side, item_columns=["item_id", "genre", ...])
    batch = inputs.batch(user_rows, owner, item_ids)  # equals transform(user_rows x item rows)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from recstack.data.batch import Batch
from recstack.export.run_folder import LoadedRun
from recstack.serving.feature_table import FeatureTable

_FIELDS = ("ids", "sequences", "weights", "dense")


class RankerInputs:
    """Ranker batches of C (user row, catalogue item) pairs from a cached item-feature table.

    Args:
        ranker: the ranking run (its preprocessor defines the features).
        items: the catalogue (plus item aggregates), keyed by item id.
        item_columns: the raw columns read from the item side; a feature whose columns are all
            here is an item feature, every other feature is read from the user rows.
    """

    def __init__(self, *, ranker: LoadedRun, items: FeatureTable, item_columns: Sequence[str]) -> None:
        self.items = items
        self.item_columns = list(item_columns)
        preprocessor = ranker.preprocessor
        self._preprocessor = preprocessor
        item_set = set(item_columns)
        features = preprocessor.schema.features
        self.item_features = [f.name for f in features if set(f.source_columns) <= item_set]
        self.user_features = [f.name for f in features if f.name not in self.item_features]
        self.user_columns = list(dict.fromkeys(c for f in features if f.name in self.user_features for c in f.source_columns))
        columns = list(dict.fromkeys(c for f in features if f.name in self.item_features for c in f.source_columns))
        table = items.table.select(columns)
        null_row = pa.table({c: pa.nulls(1, table.schema.field(c).type) for c in columns})
        self.null_row = len(items)  # the row of an item id the catalogue lacks
        self.item_batch = preprocessor.transform(pa.concat_tables([table, null_row]), features=self.item_features, with_label=False)  # (I + 1, ...)

    def item_rows(self, item_ids: np.ndarray) -> Tensor:
        """``(C,)`` int64 row of each item id in the cached item batch."""
        rows = self.items.positions(item_ids)
        return torch.from_numpy(np.where(rows >= 0, rows, self.null_row))

    def batch(self, user_rows: pa.Table, owner: np.ndarray, item_ids: np.ndarray) -> Batch:
        """The ranker batch of C pairs: user row ``owner[c]`` with item ``item_ids[c]``.

        Args:
            user_rows: B rows holding every user-side column (``user_columns``).
            owner: (C,) the request (user row) of each candidate.
            item_ids: (C,) the candidate item ids.
        """
        return self.pairs(self.user_batch(user_rows), owner, item_ids)

    def user_batch(self, user_rows: pa.Table) -> Batch:
        """The ranker's user-side features of B user rows, transformed: ``(B, ...)``."""
        for name in self.user_columns:  # a column neither side holds reads as null, as offline
            if name not in user_rows.column_names:
                user_rows = user_rows.append_column(name, pa.nulls(len(user_rows)))
        return self._preprocessor.transform(user_rows.select(self.user_columns), features=self.user_features, with_label=False)

    def pairs(self, users: Batch, owner: np.ndarray, item_ids: np.ndarray) -> Batch:
        """The ranker batch of C pairs from already-transformed user rows (``user_batch``)."""
        return combine(self.item_batch, self.item_rows(item_ids), users, torch.from_numpy(np.asarray(owner, dtype=np.int64)))


def combine(items: Batch, item_rows: Tensor, users: Batch, user_rows: Tensor) -> Batch:
    """One Batch with ``items``'s rows ``item_rows`` and ``users``'s rows ``user_rows`` side by side."""
    fields = {}
    for name in _FIELDS:
        picked = {k: v.index_select(0, item_rows) for k, v in getattr(items, name).items()}
        picked.update({k: v.index_select(0, user_rows) for k, v in getattr(users, name).items()})
        fields[name] = picked
    return Batch(**fields)

