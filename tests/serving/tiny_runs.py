"""Tiny MovieLens-shaped data and runs (a two-tower retriever and a DIN ranker), built in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.config import RunConfig
from recstack.workflows.train import train_run

ROOT = Path(__file__).resolve().parents[2]
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]
N_USERS, N_ITEMS, N_EVENTS = 24, 40, 600


def write_tiny_data(folder: Path, seed: int = 0) -> Path:
    """items/users parquet, retrieval train/valid/seen and ctr train/valid; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    item_ids = np.arange(1, N_ITEMS + 1)
    item_genres = [[GENRES[i % 5], GENRES[(i % 5 + 1 + i % 3) % 5]] if i % 2 else [GENRES[i % 5]] for i in item_ids]
    items = {
        "item_id": item_ids,
        "title": [f"Movie {i}" for i in item_ids],
        "genres": item_genres,
        "genre": [g[0] for g in item_genres],
        "release_year": 1980 + item_ids % 20,
    }
    pq.write_table(pa.table(items), folder / "items.parquet")
    user_ids = np.arange(1, N_USERS + 1)
    users = {
        "user_id": user_ids,
        "age": 18 + user_ids * 2,
        "gender": ["M" if u % 2 else "F" for u in user_ids],
        "occupation": [["student", "engineer", "artist"][u % 3] for u in user_ids],
        "zip_prefix": [f"{100 + u % 4}" for u in user_ids],
    }
    pq.write_table(pa.table(users), folder / "users.parquet")

    # Users prefer items whose first genre matches theirs, so the models learn something.
    users_col = rng.integers(1, N_USERS + 1, N_EVENTS)
    liked_genre = users_col % 5
    items_col = np.where(rng.random(N_EVENTS) < 0.7, (rng.integers(0, N_ITEMS // 5, N_EVENTS) * 5 + liked_genre) % N_ITEMS + 1, rng.integers(1, N_ITEMS + 1, N_EVENTS))
    ratings = np.where(items_col % 5 == liked_genre, 5.0, rng.integers(1, 5, N_EVENTS).astype(float))
    order = np.lexsort((np.arange(N_EVENTS), users_col))
    users_col, items_col, ratings = users_col[order], items_col[order], ratings[order]
    timestamps = 1_000_000 + np.arange(N_EVENTS)
    by_item = {int(i): k for k, i in enumerate(item_ids)}
    by_user = {int(u): k for k, u in enumerate(user_ids)}

    def rows(mask_positive: bool) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("user_id", "item_id", "rating", "timestamp", "label", "hist_item_ids", "hist_genres", "hist_liked_item_ids", "hist_liked_genres")}
        history: dict[int, list[int]] = {}
        liked: dict[int, list[int]] = {}
        for u, i, r, t in zip(users_col, items_col, ratings, timestamps):
            positive = r >= 4
            if mask_positive and not positive:
                continue
            h, hl = history.setdefault(int(u), []), liked.setdefault(int(u), [])
            out["user_id"].append(int(u)); out["item_id"].append(int(i)); out["rating"].append(float(r))
            out["timestamp"].append(int(t)); out["label"].append(float(positive))
            out["hist_item_ids"].append(h[-50:]); out["hist_genres"].append([items["genre"][by_item[x]] for x in h[-50:]])
            out["hist_liked_item_ids"].append(hl[-50:]); out["hist_liked_genres"].append([items["genre"][by_item[x]] for x in hl[-50:]])
            h.append(int(i))
            if positive:
                hl.append(int(i))
        for column in ("age", "gender", "occupation", "zip_prefix"):
            out[column] = [users[column][by_user[u]] for u in out["user_id"]]
        for column in ("title", "genres", "genre", "release_year"):
            out[column] = [items[column][by_item[i]] for i in out["item_id"]]
        n = len(out["user_id"])
        out["user_count"] = [float(len(out["hist_item_ids"][k])) for k in range(n)]
        out["user_pos_rate"] = rng.random(n).tolist(); out["user_mean_rating"] = (1 + 4 * rng.random(n)).tolist()
        out["item_count"] = rng.integers(0, 30, n).astype(float).tolist()
        out["item_pos_rate"] = rng.random(n).tolist(); out["item_mean_rating"] = (1 + 4 * rng.random(n)).tolist()
        return out

    retrieval = pa.table(rows(mask_positive=True))
    ctr = pa.table(rows(mask_positive=False))
    pq.write_table(retrieval, folder / "retrieval_train.parquet")
    pq.write_table(retrieval.slice(0, 60), folder / "retrieval_valid.parquet")
    seen = retrieval.group_by("user_id").aggregate([("item_id", "list")]).rename_columns(["user_id", "seen_item_ids"])
    pq.write_table(seen, folder / "seen.parquet")
    pq.write_table(ctr, folder / "ctr_train.parquet")
    pq.write_table(ctr.slice(0, 120), folder / "ctr_valid.parquet")
    return folder


def train_tiny_runs(folder: Path) -> tuple[Path, Path]:
    """A two-tower retrieval run and a DIN ranking run on the tiny data; returns both folders."""
    data = write_tiny_data(folder / "data")
    dssm = RunConfig.from_dict(
        {
            "name": "tiny_dssm",
            "data": {"train": str(data / "retrieval_train.parquet"), "valid": str(data / "retrieval_valid.parquet"), "catalog": str(data / "items.parquet"), "seen": str(data / "seen.parquet")},
            "schema": str(ROOT / "schemas/movielens_retrieval.yaml"),
            "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
            "model": {"name": "dssm", "params": {"hidden_dims": [16, 8], "output_activation": "identity"}},
            "loader": {"batch_size": 64},
            "trainer": {"epochs": 2, "lr": 0.01, "monitor": "recall@10"},
            "evaluation": {"ks": [10]},
            "output": str(folder / "dssm"),
        }
    )
    din = RunConfig.from_dict(
        {
            "name": "tiny_din",
            "data": {"train": str(data / "ctr_train.parquet"), "valid": str(data / "ctr_valid.parquet")},
            "schema": str(ROOT / "schemas/movielens_ctr.yaml"),
            "task": {"type": "binary"},
            "model": {"name": "din", "params": {"behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}, {"candidate": "genre", "history": "hist_genres"}], "attention_hidden_dims": [8], "hidden_dims": [16]}},
            "loader": {"batch_size": 128},
            "trainer": {"epochs": 2, "lr": 0.01, "monitor": "auc"},
            "output": str(folder / "din"),
        }
    )
    quiet = lambda message: None  # noqa: E731
    train_run(dssm, log=quiet)
    train_run(din, log=quiet)
    return folder / "dssm", folder / "din"
