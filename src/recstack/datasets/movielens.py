"""MovieLens-100K as Parquet for CTR prediction and for retrieval.

``build_ctr`` writes one row per rating, sorted by time, split globally by time::

    out_dir/train.parquet valid.parquet test.parquet   rows with features (see build_ctr)
    out_dir/items.parquet                                item_id, title, genres, genre, release_year
    out_dir/users.parquet                                user_id, age, gender, occupation, zip_prefix
    out_dir/stats.json                                   parameters, row counts, positive rates

Every history and aggregate of a row is computed from the rows strictly earlier in time
(an equal timestamp does not count as earlier), so a feature never contains its own label.
Rates are smoothed toward fixed priors computed on the training split only:
``pos_rate = (earlier positives + prior * 5) / (earlier count + 5)`` (means likewise, toward the
training mean rating). Valid and test rows see every earlier row, including earlier valid rows,
as a feature store would at serving time.

Example:
    >>> stats = build_ctr("data/ml100k-ctr")  # doctest: +SKIP
    >>> stats["rows"]  # doctest: +SKIP
    {'train': 80000, 'valid': 10000, 'test': 10000}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.datasets._features import attach, first_element, lookup_values
from recstack.datasets._files import cached_stats, write_stats, write_tables
from recstack.datasets._sequences import (
    GroupIndex,
    earlier_sums,
    group_index,
    smoothed,
    unsort,
    window_positions,
)
from recstack.datasets.movielens_raw import MovieLensRaw, load_raw
from recstack.datasets.retrieval_split import RETRIEVAL_FILES, SPLITS, write_retrieval

__all__ = ["build_ctr", "build_retrieval", "load_raw", "item_table", "user_table"]

FORMAT_VERSION = 1
LIKED_RATING = 4.0  # label = rating >= 4
SMOOTHING = 5.0  # pseudo-count m of the smoothed rates and means
CTR_FILES = [f"{name}.parquet" for name in (*SPLITS, "items", "users")]


def build_ctr(
    out_dir: str | Path,
    source: str | Path | None = None,
    *,
    history_len: int = 50,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
) -> dict[str, Any]:
    """Write the CTR data set (see the module docstring) and return its stats.

    Args:
        out_dir: output folder; if it already holds a build with the same parameters, that
            build's stats are returned without rebuilding.
        source: MovieLens-100K folder or zip in the official or RecBole layout (``load_raw``).
        history_len: the most recent items kept in each behaviour sequence.
        valid_frac, test_frac: the last fractions of rows in time going to valid and test.

    Columns of train/valid/test: user_id, item_id, rating, timestamp, label (float32, rating >= 4),
    age, gender, occupation, zip_prefix, title, genres (list<string>), genre (the first),
    release_year (nullable), hist_item_ids (list<int64>), hist_genres (aligned first genres),
    hist_liked_item_ids, hist_liked_genres, user_count, user_pos_rate, user_mean_rating,
    item_count, item_pos_rate, item_mean_rating.

    Returns:
        stats: ``rows``, ``positive_rate`` per split, ``test_users``, ``cold_test_users`` (test
        users with no training row), split timestamps, priors, timings and ``params``.
    """
    if not (valid_frac >= 0 and test_frac >= 0 and valid_frac + test_frac < 1):
        raise ValueError(f"valid_frac + test_frac must be in [0, 1), got {valid_frac} + {test_frac}")
    out = Path(out_dir)
    params = _params("ctr", source, history_len=history_len, valid_frac=valid_frac, test_frac=test_frac)
    if (stats := cached_stats(out, CTR_FILES, params)) is not None:
        return stats
    started = time.perf_counter()
    raw = load_raw(source)
    users, items = user_table(raw), item_table(raw)
    ratings = raw.ratings.sort_by([("timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])
    split = time_split(ratings["timestamp"].to_numpy(), valid_frac, test_frac)
    rows = ctr_rows(ratings, users, items, split=split, history_len=history_len)
    tables = {name: rows.filter(pa.array(split == code)) for code, name in enumerate(SPLITS)}
    write_tables(out, {**tables, "items": items, "users": users})
    stats = _ctr_stats(tables, params)
    stats["build_seconds"] = round(time.perf_counter() - started, 3)
    write_stats(out, stats)
    return stats


def build_retrieval(out_dir: str | Path, source: str | Path | None = None, *, history_len: int = 50) -> dict[str, Any]:
    """Write the leave-last-two-out retrieval data set and return its stats.

    Files: ``train/valid/test.parquet`` (user_id, item_id, rating, timestamp, hist_item_ids,
    hist_genres, user and item features), ``seen.parquet`` (user_id, seen_item_ids),
    ``items.parquet``, ``users.parquet``, ``stats.json``. Positives are ratings >= 4; the
    split is described in ``recstack.datasets.retrieval_split``.
    """
    out = Path(out_dir)
    params = _params("retrieval", source, history_len=history_len)
    if (stats := cached_stats(out, RETRIEVAL_FILES, params)) is not None:
        return stats
    started = time.perf_counter()
    raw = load_raw(source)
    label = pc.greater_equal(raw.ratings["rating"], LIKED_RATING).cast(pa.float32())
    interactions = raw.ratings.append_column("label", label)
    stats = write_retrieval(
        out, interactions, user_table(raw), item_table(raw), history_len=history_len, params=params
    )
    stats["build_seconds"] = round(time.perf_counter() - started, 3)
    write_stats(out, stats)
    return stats


def user_table(raw: MovieLensRaw) -> pa.Table:
    """``user_id, age, gender, occupation, zip_prefix`` (first three characters of the zip)."""
    users = raw.users
    zip_prefix = pc.utf8_slice_codeunits(users["zip_code"], 0, 3)
    return users.select(["user_id", "age", "gender", "occupation"]).append_column("zip_prefix", zip_prefix)


def item_table(raw: MovieLensRaw) -> pa.Table:
    """``item_id, title, genres, genre`` (the first genre), ``release_year``."""
    items = raw.items
    genre = first_element(items["genres"])
    return pa.table(
        {"item_id": items["item_id"], "title": items["title"], "genres": items["genres"],
         "genre": genre, "release_year": items["release_year"]}
    )  # fmt: skip


def time_split(timestamps: np.ndarray, valid_frac: float, test_frac: float) -> np.ndarray:
    """Split codes (0 train, 1 valid, 2 test) by timestamp quantiles of sorted ``timestamps``.

    Boundaries are timestamps, so rows sharing a timestamp stay together and
    ``max(train) < min(valid) <= max(valid) < min(test)``.
    """
    count = len(timestamps)
    cuts = [int(round(count * (1 - valid_frac - test_frac))), int(round(count * (1 - test_frac)))]
    bounds = [timestamps[cut] if cut < count else np.iinfo(np.int64).max for cut in cuts]
    return np.searchsorted(np.asarray(bounds), timestamps, side="right").astype(np.int8)


def ctr_rows(ratings: pa.Table, users: pa.Table, items: pa.Table, *, split: np.ndarray, history_len: int) -> pa.Table:
    """Feature rows in the order of ``ratings``: histories, smoothed aggregates, user/item features."""
    user_ids, item_ids = ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy()
    timestamps, rating = ratings["timestamp"].to_numpy(), ratings["rating"].to_numpy().astype(np.float64)
    label = (rating >= LIKED_RATING).astype(np.float64)
    priors = {"label": float(label[split == 0].mean()), "rating": float(rating[split == 0].mean())}
    rows = ratings.append_column("label", pa.array(label.astype(np.float32)))
    rows = attach(attach(rows, users, "user_id"), items, "item_id")
    by_user = group_index(user_ids, timestamps, tiebreak=item_ids)
    for name, column in histories(by_user, item_ids, label.astype(bool), items, history_len).items():
        rows = rows.append_column(name, column)
    for prefix, keys in (("user", user_ids), ("item", item_ids)):
        index = by_user if prefix == "user" else group_index(keys, timestamps, tiebreak=user_ids)
        for name, column in aggregates(index, label, rating, priors).items():
            rows = rows.append_column(f"{prefix}_{name}", pa.array(column))
    return rows


def histories(
    index: GroupIndex, item_ids: np.ndarray, liked: np.ndarray, items: pa.Table, history_len: int
) -> dict[str, pa.ListArray]:
    """``hist_item_ids``/``hist_genres`` and their liked-only twins, in the input row order.

    Windows are the last ``history_len`` strictly earlier items of the group, oldest first.
    """
    sorted_items = item_ids[index.order]
    sorted_liked = liked[index.order]
    liked_before = np.r_[0, np.cumsum(sorted_liked)]  # liked rows before each sorted position
    liked_items = sorted_items[sorted_liked]
    windows = {
        "hist": (sorted_items, index.group_start, index.tie_start),
        "hist_liked": (liked_items, liked_before[index.group_start], liked_before[index.tie_start]),
    }
    inverse = pa.array(np.argsort(index.order))
    columns: dict[str, pa.ListArray] = {}
    for prefix, (values, start, stop) in windows.items():
        offsets, positions = window_positions(start, stop, history_len)
        ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[positions], pa.int64()))
        columns[f"{prefix}_item_ids"] = ids.take(inverse)
        columns[f"{prefix}_genres"] = lookup_values(ids, items, "item_id", "genre").take(inverse)
    return columns


def aggregates(index: GroupIndex, label: np.ndarray, rating: np.ndarray, priors: dict[str, float]) -> dict[str, np.ndarray]:
    """``count``, ``pos_rate`` and ``mean_rating`` over strictly earlier rows, input row order."""
    count = index.earlier_count
    positives = earlier_sums(label[index.order], index)
    rating_sum = earlier_sums(rating[index.order], index)
    return {
        "count": unsort(count.astype(np.int64), index.order),
        "pos_rate": unsort(smoothed(positives, count, priors["label"], SMOOTHING), index.order),
        "mean_rating": unsort(smoothed(rating_sum, count, priors["rating"], SMOOTHING), index.order),
    }


def _ctr_stats(tables: dict[str, pa.Table], params: dict[str, Any]) -> dict[str, Any]:
    train_users = pc.unique(tables["train"]["user_id"])
    stats: dict[str, Any] = {
        "params": params,
        "rows": {name: table.num_rows for name, table in tables.items()},
        "positive_rate": {name: _mean(table["label"]) for name, table in tables.items()},
        "split_start_timestamp": {
            name: (int(pc.min(table["timestamp"]).as_py()) if table.num_rows else None) for name, table in tables.items()
        },
        "priors": {"pos_rate": _mean(tables["train"]["label"]), "mean_rating": _mean(tables["train"]["rating"])},
    }
    for name in ("valid", "test"):
        split_users = pc.unique(tables[name]["user_id"])
        stats[f"{name}_users"] = len(split_users)
        stats[f"cold_{name}_users"] = len(split_users) - int(pc.sum(pc.is_in(split_users, train_users)).as_py() or 0)
    return stats


def _mean(column: pa.ChunkedArray) -> float | None:
    value = pc.mean(column).as_py()
    return None if value is None else round(float(value), 6)


def _params(kind: str, source: str | Path | None, **values: Any) -> dict[str, Any]:
    source_key = "default-cache" if source is None else str(Path(source).expanduser().resolve())
    return {"kind": f"movielens-100k-{kind}", "format_version": FORMAT_VERSION, "source": source_key, **values}
