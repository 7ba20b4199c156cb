"""Full-corpus evaluation targets: the held-out item is ranked, seen and history items are excluded."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.data.sources import DataSource
from recstack.workflows.retrieval import held_out


def test_targets_and_exclusions_per_user(tmp_path: Path) -> None:
    catalog = np.array([10, 11, 12, 13, 14, 15])
    pq.write_table(
        pa.table({"user_id": [2, 1, 3], "item_id": [14, 13, 99], "hist_item_ids": [[12, 15], [10], [11]]}),
        tmp_path / "test.parquet",
    )
    pq.write_table(pa.table({"user_id": [1, 2], "seen_item_ids": [[10, 11, 77], [12]]}), tmp_path / "seen.parquet")
    result = held_out(
        DataSource(paths=(str(tmp_path / "test.parquet"),)),
        DataSource(paths=(str(tmp_path / "seen.parquet"),)),
        catalog,
        user_column="user_id",
        item_column="item_id",
    )
    # user 3's held-out item 99 is not in the catalogue: that user cannot be evaluated
    assert result.user_ids.tolist() == [2, 1]
    assert catalog[result.targets].tolist() == [14, 13]
    excluded = [sorted(catalog[result.exclude_indices[a:b]].tolist()) for a, b in zip(result.exclude_indptr[:-1], result.exclude_indptr[1:])]
    # user 2: seen 12 + history 12, 15 (deduplicated); user 1: seen 10, 11 (77 unknown) + history 10
    assert excluded == [[12, 15], [10, 11]]
