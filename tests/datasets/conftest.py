"""Tiny fake MovieLens-100K folders, in the official and the RecBole layouts, built from one spec."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest

from recstack.datasets.movielens_raw import GENRES


@dataclass(frozen=True)
class FakeMovieLens:
    ratings: list[tuple[int, int, int, int]]  # user, item, rating, timestamp
    users: list[tuple[int, int, str, str, str]]  # id, age, gender, occupation, zip
    items: list[tuple[int, str, int | None, list[str]]]  # id, title, year, genres


# The hand example: user 1 rates items 2 and 3 at the same second (a tie).
HAND = FakeMovieLens(
    ratings=[
        (1, 1, 5, 100), (2, 1, 2, 100), (3, 1, 4, 150),
        (1, 2, 3, 200), (1, 3, 4, 200), (1, 4, 1, 300),
        (2, 5, 4, 310), (3, 6, 5, 320), (2, 6, 3, 330), (4, 2, 5, 400),
    ],
    users=[
        (1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
        (3, 23, "M", "writer", "T8H1N"), (4, 33, "F", "artist", "02138"),
    ],
    items=[
        (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
        (2, "GoldenEye", 1995, ["Action", "Adventure", "Thriller"]),
        (3, "Café au lait", 1994, ["Comedy"]),
        (4, "unknown", None, ["unknown"]),
        (5, "Shawshank Redemption, The", 1994, ["Drama"]),
        (6, "Heavy Metal", 1981, ["Action", "Animation", "Horror", "Sci-Fi"]),
    ],
)  # fmt: skip


def random_movielens(seed: int, *, users: int = 25, items: int = 30, ratings: int = 500) -> FakeMovieLens:
    """Random ratings on a coarse clock, so many (user, timestamp) and (item, timestamp) ties."""
    rng = np.random.default_rng(seed)
    pairs = rng.permutation(users * items)[:ratings]
    rows = [
        (int(p // items) + 1, int(p % items) + 1, int(rng.integers(1, 6)), int(rng.integers(0, 60)) * 1000)
        for p in pairs
    ]
    user_rows = [(u, 20 + u, "MF"[u % 2], "student", f"{10000 + u}") for u in range(1, users + 1)]
    item_rows = [(i, f"Movie {i}", 1990 + i % 10, [GENRES[1 + i % 18], GENRES[1 + (i * 7) % 18]][: 1 + i % 2]) for i in range(1, items + 1)]
    return FakeMovieLens(ratings=rows, users=user_rows, items=item_rows)


def write_official(folder: Path, data: FakeMovieLens) -> Path:
    """u.data, u.user, u.item (latin-1, genre flags) and u.genre, as GroupLens ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.ratings))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in data.users))
    lines = []
    for item, title, year, genres in data.items:
        flags = "|".join("1" if genre in genres else "0" for genre in GENRES)
        full_title = f"{title} ({year})" if year else title
        release = f"01-Jan-{year}" if year else ""
        lines.append(f"{item}|{full_title}|{release}||http://us.imdb.com/M/title-exact?x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.genre").write_text("".join(f"{genre}|{index}\n" for index, genre in enumerate(GENRES)) + "\n")
    return folder


def write_recbole(folder: Path, data: FakeMovieLens) -> Path:
    """ml-100k.inter/.user/.item atomic files with typed headers (UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    inter += [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.ratings]
    (folder / "ml-100k.inter").write_text("".join(inter))
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"]
    user += [f"{u}\t{a}\t{g}\t{o}\t{z}\n" for u, a, g, o, z in data.users]
    (folder / "ml-100k.user").write_text("".join(user))
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    item += [f"{i}\t{title}\t{year if year else 'unkonwn'}\t{' '.join(genres)}\n" for i, title, year, genres in data.items]
    (folder / "ml-100k.item").write_text("".join(item), encoding="utf8")
    return folder


@pytest.fixture
def hand_official(tmp_path: Path) -> Path:
    return write_official(tmp_path / "official", HAND)


@pytest.fixture
def hand_recbole(tmp_path: Path) -> Path:
    return write_recbole(tmp_path / "recbole", HAND)


@pytest.fixture
def fake_ml() -> SimpleNamespace:
    """The fake-data helpers, for tests that build their own folders (no cross-test imports)."""
    return SimpleNamespace(
        hand=HAND, random=random_movielens, write_official=write_official, write_recbole=write_recbole
    )
