"""The MovieLens-100K multi-task set (on a fake MovieLens folder) and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.datasets import build_ctr, build_multitask, generate_multitask
from recstack.datasets.movielens_raw import GENRES
from recstack.datasets.multi_task import sample_unobserved


def fake_movielens(folder: Path, *, users: int = 30, items: int = 60, ratings: int = 700, seed: int = 0) -> Path:
    """The official layout (u.data, u.user, u.item, u.genre); item popularity is skewed."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1)
    pairs = set()
    while len(pairs) < ratings:
        pairs.add((int(rng.integers(1, users + 1)), int(rng.choice(items, p=weights / weights.sum())) + 1))
    folder.mkdir(parents=True)
    rows = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{rng.integers(0, 50) * 1000}\n" for u, i in sorted(pairs)]
    (folder / "u.data").write_text("".join(rows))
    (folder / "u.user").write_text("".join(f"{u}|{20 + u}|{'MF'[u % 2]}|student|{10000 + u}\n" for u in range(1, users + 1)))
    lines = []
    for i in range(1, items + 1):
        flags = "|".join("1" if k == 1 + i % 18 else "0" for k in range(len(GENRES)))
        lines.append(f"{i}|Movie {i} ({1990 + i % 10})|01-Jan-{1990 + i % 10}||http://x|{flags}\n")
    (folder / "u.item").write_text("".join(lines))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ml")
    source = fake_movielens(root / "raw")
    stats = build_multitask(root / "mt", source)
    build_ctr(root / "ctr", source)
    tables = {s: pq.read_table(root / "mt" / f"{s}.parquet") for s in ("train", "valid", "test")}
    ctr = {s: pq.read_table(root / "ctr" / f"{s}.parquet") for s in ("train", "valid", "test")}
    return stats, tables, ctr, source


def test_targets_and_sampled_rows(built) -> None:
    stats, tables, ctr, _ = built
    rows = pa.concat_tables(tables.values())
    click, like, rating = (rows[c].to_numpy() for c in ("click", "like", "rating"))
    assert click.mean() == 0.5 and stats["click_rate"]["train"] == pytest.approx(0.5, abs=0.02)
    assert (like[click == 1] == (rating[click == 1] >= 4)).all() and (like[click == 0] == 0).all()
    rated = set(zip(rows["user_id"].to_numpy()[click == 1].tolist(), rows["item_id"].to_numpy()[click == 1].tolist()))
    sampled = set(zip(rows["user_id"].to_numpy()[click == 0].tolist(), rows["item_id"].to_numpy()[click == 0].tolist()))
    assert not rated & sampled  # a sampled movie is one its user never rated
    assert set(stats["popularity_auc"]["test"]) == {"click", "like", "click_and_like"}


def test_observed_rows_and_the_split_are_the_ctr_sets(built) -> None:
    _, tables, ctr, _ = built
    for split in tables:
        observed = tables[split].filter(pa.compute.equal(tables[split]["click"], 1.0))
        key = ["timestamp", "user_id", "item_id"]
        mine, theirs = observed.sort_by([(k, "ascending") for k in key]), ctr[split].sort_by([(k, "ascending") for k in key])
        for column in ("user_id", "item_id", "hist_item_ids", "user_count", "user_pos_rate", "item_count", "item_pos_rate", "item_mean_rating", "genre"):
            expected = theirs[column].to_pylist()
            if pa.types.is_floating(mine[column].type):
                expected = pytest.approx(expected)
            assert mine[column].to_pylist() == expected, (split, column)


def test_sampled_rows_carry_their_users_features_then_and_the_movies_own(built) -> None:
    _, tables, _, _ = built
    rows = tables["train"].to_pandas()
    observed = rows[rows.click == 1].set_index(["user_id", "timestamp"])
    for _, row in rows[rows.click == 0].head(50).iterrows():
        source = observed.loc[(row.user_id, row.timestamp)]
        source = source.iloc[0] if source.ndim == 2 else source
        assert list(row.hist_item_ids) == list(source.hist_item_ids) and row.user_count == source.user_count
        earlier = rows[(rows.click == 1) & (rows.item_id == row.item_id) & (rows.timestamp < row.timestamp)]
        assert row.item_count == len(earlier)  # the movie's ratings strictly before (train rows here)
        assert row.genre == f"{GENRES[1 + row.item_id % 18]}"


def test_unobserved_movies_are_drawn_by_popularity() -> None:
    rng = np.random.default_rng(0)
    items = np.repeat(np.arange(10), [1000, 500, 300, 200, 100, 50, 20, 10, 5, 1])  # skewed popularity
    users = np.zeros(len(items), np.int64)
    users[:5] = 1  # user 1 rated movie 0 (five times): never drawn for them
    drawn = sample_unobserved(users, items, np.repeat(np.arange(5), 4000), rng)
    assert not (drawn == 0).any()
    counts = np.bincount(drawn, minlength=10)[1:]
    expected = np.array([500, 300, 200, 100, 50, 20, 10, 5, 1]) / 1186 * len(drawn)
    assert np.allclose(counts, expected, rtol=0.15, atol=30)


def test_synthetic_targets_are_planted_and_like_needs_click(tmp_path: Path) -> None:
    stats = generate_multitask(tmp_path, rows=(3000, 500, 500))
    table = pq.read_table(tmp_path / "train.parquet")
    click, like = table["click"].to_numpy(), table["like"].to_numpy()
    assert (like <= click).all() and 0.2 < click.mean() < 0.8
    assert stats["oracle_auc"]["train"]["click"] > 0.75 and stats["oracle_auc"]["train"]["like"] > 0.75
