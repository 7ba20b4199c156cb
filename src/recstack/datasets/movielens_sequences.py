"""MovieLens-100K as per-user sequences for next-item retrieval (SASRec, GRU4Rec).

Every rating is an interaction (implicit feedback, as in SASRec and RecBole's sequential
benchmarks), ordered by timestamp; the split is :mod:`recstack.datasets.sequence_split`'s
leave-one-out (or time split). Files: ``train/valid/test/seen.parquet`` (see
:class:`~recstack.datasets.sequence_split.SequenceSplit`; each row also holds its target's
``genre``, for ``item_side_features``), ``items.parquet`` (the catalogue: every movie),
``users.parquet``, ``stats.json`` (with the truncation counts).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from recstack.atomic import atomic_path
from recstack.data.sources import DataSource
from recstack.datasets._files import cached_stats, write_stats
from recstack.datasets.movielens import item_table, user_table
from recstack.datasets.movielens_raw import load_raw
from recstack.datasets.sequence_split import SEQUENCE_FILES, SequenceSplitSpec, sequence_params, write_sequence_split

__all__ = ["SEQUENCE_DATASET_FILES", "build_sequences"]

SEQUENCE_DATASET_FILES = [*SEQUENCE_FILES, "items.parquet", "users.parquet"]


def build_sequences(
    out_dir: str | Path, source: str | Path | None = None, *, max_len: int = 50, how: str = "leave_one_out", partitions: int = 1
) -> dict[str, Any]:
    """Write the MovieLens-100K sequence data set to ``out_dir`` and return its stats (cached:
    an existing build with the same parameters is returned as is)."""
    out = Path(out_dir)
    spec = SequenceSplitSpec(how=how, max_len=max_len)
    params = {"kind": "sequences", "format": 2, "source": str(source) if source else None, **sequence_params(spec), "partitions": partitions}
    if (stats := cached_stats(out, SEQUENCE_DATASET_FILES, params)) is not None:
        return stats
    started = time.perf_counter()
    raw = load_raw(source)
    out.mkdir(parents=True, exist_ok=True)
    events = out / "events.parquet"
    with atomic_path(events) as tmp:
        pq.write_table(raw.ratings.select(["user_id", "item_id", "timestamp"]), tmp)
    items = item_table(raw)
    split = write_sequence_split(
        DataSource(paths=(str(events),)), out, spec, partitions=partitions,
        extra_tables={"items": items, "users": user_table(raw)}, item_features=items.select(["item_id", "genre"]),
    )  # fmt: skip
    events.unlink()
    stats = {"params": params, "items": raw.items.num_rows, **split.as_dict(), "build_seconds": round(time.perf_counter() - started, 3)}
    write_stats(out, stats)
    return stats
