"""Multi-task ranking data: MovieLens-100K impressions with two targets, and a synthetic twin.

``build_multitask`` (``recstack datasets movielens-multitask``): impressions are the observed
ratings plus ``negatives`` unobserved movies per rating, drawn for the same user at the same
time **in proportion to the movies' popularity** (number of ratings) — with uniform negatives,
popularity alone scores "watched" at AUC ≈ 0.82 and no model beats it (issue 19). Targets::

    click   1 for an observed rating, 0 for a sampled movie          ("watched")
    like    rating >= 4, defined only where click = 1 (0 elsewhere)  ("liked": ESMM's CVR)

A sampled movie is one the user never rated. Its row has the user's features at that time
(histories and aggregates of strictly earlier ratings, exactly those of the rating it was drawn
for) and the movie's features, its aggregates (count, like rate, mean rating) over ratings
strictly earlier than that time. The split is the CTR set's: by the ratings' time
(``movielens.time_split``), a sampled row in its rating's split. Columns: the CTR set's
(``movielens.build_ctr``) without ``label``, plus ``click`` and ``like`` (float32); ``rating`` is
0 on sampled rows. ``stats.json`` reports each split's rates and the popularity baseline's AUC
per target (``popularity_auc``: training-split rating counts as the score).

``generate_multitask``: synthetic rows with two planted, partly correlated targets (click, and
like given click), for tests and quick runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recstack.datasets._features import take_by_key
from recstack.datasets._files import cached_stats, write_stats, write_tables
from recstack.datasets._sampling import auc, sigmoid
from recstack.datasets._sequences import smoothed
from recstack.datasets.movielens import LIKED_RATING, SMOOTHING, _params, ctr_rows, item_table, time_split, user_table
from recstack.datasets.movielens_raw import load_raw
from recstack.datasets.retrieval_split import SPLITS

__all__ = ["MULTITASK_FILES", "build_multitask", "generate_multitask"]

MULTITASK_FILES = [f"{name}.parquet" for name in (*SPLITS, "items", "users")]
ITEM_COLUMNS = ["item_id", "title", "genres", "genre", "release_year"]


def build_multitask(
    out_dir: str | Path,
    source: str | Path | None = None,
    *,
    negatives: int = 1,
    history_len: int = 50,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the multi-task set (module docstring) into ``out_dir``; return its stats.

    Args:
        negatives: sampled unobserved movies per observed rating.
        history_len, valid_frac, test_frac: as :func:`recstack.datasets.movielens.build_ctr`.
        seed: the sampling's seed.
    """
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    out = Path(out_dir)
    params = _params("multitask", source, negatives=negatives, history_len=history_len,
                     valid_frac=valid_frac, test_frac=test_frac, seed=seed)  # fmt: skip
    if (stats := cached_stats(out, MULTITASK_FILES, params)) is not None:
        return stats
    started = time.perf_counter()
    raw = load_raw(source)
    users, items = user_table(raw), item_table(raw)
    ratings = raw.ratings.sort_by([("timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])
    split = time_split(ratings["timestamp"].to_numpy(), valid_frac, test_frac)  # (R,) as the CTR set's
    observed = ctr_rows(ratings, users, items, split=split, history_len=history_len)  # (R rows) features
    rng = np.random.default_rng(seed)
    source_row = np.repeat(np.arange(ratings.num_rows), negatives)  # (R * k,) the rating each is drawn for
    sampled_items = sample_unobserved(ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy(), source_row, rng)
    rows = _impressions(observed, items, source_row, sampled_items)
    rows = _with_item_aggregates(rows, ratings, split)
    split_of_row = np.concatenate([split, split[source_row]])
    order = np.lexsort((rows["item_id"].to_numpy(), rows["user_id"].to_numpy(), rows["timestamp"].to_numpy()))
    rows, split_of_row = rows.take(pa.array(order)), split_of_row[order]
    tables = {name: rows.filter(pa.array(split_of_row == code)) for code, name in enumerate(SPLITS)}
    write_tables(out, {**tables, "items": items, "users": users})
    stats = _stats(tables, params)
    stats["build_seconds"] = round(time.perf_counter() - started, 3)
    write_stats(out, stats)
    return stats


def sample_unobserved(user_ids: np.ndarray, item_ids: np.ndarray, source_row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each ``source_row`` (an index into the ratings), a movie its user never rated, drawn
    with probability proportional to the movie's number of ratings; redrawn (all at once) while
    any draw is a rated movie."""
    popularity = np.bincount(item_ids).astype(np.float64)  # (I,) ratings per movie id
    cumulative = np.cumsum(popularity / popularity.sum())
    num_items = len(popularity)
    rated = np.unique(user_ids.astype(np.int64) * num_items + item_ids)  # sorted (user, movie) keys
    users = user_ids[source_row].astype(np.int64)
    drawn = np.empty(len(source_row), np.int64)
    pending = np.arange(len(source_row))
    for _ in range(1000):  # a user rated at most ~half the popularity mass: few rounds
        draws = np.minimum(np.searchsorted(cumulative, rng.random(len(pending)), side="right"), num_items - 1)
        drawn[pending] = draws
        keys = users[pending] * num_items + draws
        pending = pending[np.isin(keys, rated, assume_unique=False)]
        if not len(pending):
            return drawn
    raise RuntimeError("could not draw unobserved movies (a user rated nearly every movie)")


def _impressions(observed: pa.Table, items: pa.Table, source_row: np.ndarray, sampled_items: np.ndarray) -> pa.Table:
    """The observed rows then the sampled ones (user side copied from their rating, movie side
    looked up), with ``click``/``like`` and without the CTR set's ``label``."""
    sampled = observed.take(pa.array(source_row))
    lookup = take_by_key(pa.array(sampled_items), items, "item_id")  # the sampled movies' rows
    for name in ITEM_COLUMNS:
        index = sampled.schema.get_field_index(name)
        sampled = sampled.set_column(index, name, lookup[name].cast(sampled.schema.field(name).type))
    rating_index = sampled.schema.get_field_index("rating")
    sampled = sampled.set_column(rating_index, "rating", pa.array(np.zeros(len(source_row)), sampled.schema.field("rating").type))
    ratings = observed["rating"].to_numpy().astype(np.float64)
    click = np.r_[np.ones(observed.num_rows), np.zeros(len(source_row))].astype(np.float32)
    like = np.r_[(ratings >= LIKED_RATING), np.zeros(len(source_row), bool)].astype(np.float32)
    rows = pa.concat_tables([observed, sampled]).drop_columns(["label"])
    return rows.append_column("click", pa.array(click)).append_column("like", pa.array(like))


def _with_item_aggregates(rows: pa.Table, ratings: pa.Table, split: np.ndarray) -> pa.Table:
    """``item_count``, ``item_pos_rate``, ``item_mean_rating`` of every row's movie over the
    ratings strictly earlier than the row's time (the CTR set's definition, smoothed toward the
    training split's priors), for observed and sampled rows alike."""
    item_ids, timestamps = ratings["item_id"].to_numpy().astype(np.int64), ratings["timestamp"].to_numpy().astype(np.int64)
    rating = ratings["rating"].to_numpy().astype(np.float64)
    liked = (rating >= LIKED_RATING).astype(np.float64)
    priors = {"label": float(liked[split == 0].mean()), "rating": float(rating[split == 0].mean())}
    span = int(timestamps.max()) + 2
    keys = item_ids * span + timestamps
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    liked_before = np.r_[0.0, np.cumsum(liked[order])]
    rating_before = np.r_[0.0, np.cumsum(rating[order])]
    query_items = rows["item_id"].to_numpy().astype(np.int64)
    query = query_items * span + rows["timestamp"].to_numpy().astype(np.int64)
    start = np.searchsorted(sorted_keys, query_items * span, side="left")  # the movie's first rating
    stop = np.searchsorted(sorted_keys, query, side="left")  # its first rating at or after the time
    count = stop - start
    values = {
        "item_count": count.astype(np.int64),
        "item_pos_rate": smoothed(liked_before[stop] - liked_before[start], count, priors["label"], SMOOTHING),
        "item_mean_rating": smoothed(rating_before[stop] - rating_before[start], count, priors["rating"], SMOOTHING),
    }
    for name, column in values.items():
        index = rows.schema.get_field_index(name)
        rows = rows.set_column(index, name, pa.array(column, rows.schema.field(name).type))
    return rows


def _stats(tables: dict[str, pa.Table], params: dict[str, Any]) -> dict[str, Any]:
    popularity = np.bincount(tables["train"].filter(pa.compute.equal(tables["train"]["click"], 1.0))["item_id"].to_numpy())
    stats: dict[str, Any] = {"params": params, "rows": {}, "click_rate": {}, "like_rate_given_click": {}, "popularity_auc": {}}
    for name, table in tables.items():
        click, like = table["click"].to_numpy(), table["like"].to_numpy()
        items = table["item_id"].to_numpy()
        score = np.where(items < len(popularity), popularity[np.minimum(items, len(popularity) - 1)], 0).astype(np.float64)
        clicked = click == 1
        stats["rows"][name] = table.num_rows
        stats["click_rate"][name] = round(float(click.mean()), 6)
        stats["like_rate_given_click"][name] = round(float(like[clicked].mean()), 6)
        stats["popularity_auc"][name] = {
            "click": round(auc(click, score), 6),
            "like": round(auc(like[clicked], score[clicked]), 6),
            "click_and_like": round(auc(click * like, score), 6),
        }
    return stats


def generate_multitask(out_dir: str | Path, *, rows: tuple[int, int, int] = (20_000, 5_000, 5_000), correlation: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Synthetic train/valid/test Parquet files with two planted targets; returns stats.

    ``P(click) = sigmoid(a[user_group, item_cat] + 0.5 x)`` and ``P(like | click) =
    sigmoid(b[user_group, item_cat] - 0.5 x)`` with ``b = correlation * a + sqrt(1 -
    correlation^2) * c`` (a, c independent normal interaction tables, scale 1.5); ``like`` is 0
    where ``click`` is 0. Columns: user_id, item_id, user_group, item_cat (int64), x (float32),
    click, like (float32). Stats hold the oracle AUCs of each target.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    groups, cats = 8, 10
    a = rng.normal(scale=1.5, size=(groups, cats))
    b = correlation * a + np.sqrt(1 - correlation**2) * rng.normal(scale=1.5, size=(groups, cats))
    tables, stats = {}, {"rows": {}, "oracle_auc": {}, "params": {"rows": list(rows), "correlation": correlation, "seed": seed}}
    for name, count in zip(SPLITS, rows):
        users, items = rng.integers(0, 200, count), rng.integers(0, 300, count)
        user_group, item_cat = users % groups, items % cats
        x = rng.normal(size=count)
        p_click = sigmoid(a[user_group, item_cat] + 0.5 * x)
        p_like = sigmoid(b[user_group, item_cat] - 0.5 * x)
        click = (rng.random(count) < p_click).astype(np.float32)
        like = (click * (rng.random(count) < p_like)).astype(np.float32)
        tables[name] = pa.table({"user_id": users, "item_id": items, "user_group": user_group, "item_cat": item_cat,
                                 "x": x.astype(np.float32), "click": click, "like": like})  # fmt: skip
        clicked = click == 1
        stats["rows"][name] = count
        stats["oracle_auc"][name] = {"click": auc(click, p_click), "like": auc(like[clicked], p_like[clicked])}
    write_tables(out, tables)
    write_stats(out, stats)
    return stats
