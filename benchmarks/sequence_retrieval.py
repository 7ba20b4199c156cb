"""Sequential recall benchmark on MovieLens-100K leave-one-out sequences (``recstack datasets
movielens-sequences``): SASRec and GRU4Rec (recstack, trained by ``train_run`` from the shipped
configs) beside Popularity, EASE, ALS and the order-blind two-tower models (DSSM, YouTubeDNN), on
the same split and the same scoring code.

Every rating is an interaction; per user, the last item is the test target, the one before the
validation target. Every method ranks all 1,682 items for each of the 943 test users with the
test row's input items (its last 50 items, ``hist_item_ids``) excluded, through
``recstack.evaluation.retrieval_metrics.evaluate_ranked_scores`` and the targets/exclusions of
``recstack.data.held_out`` (the deep models get them inside ``train_run``'s test evaluation).
Popularity and EASE are fitted on every item before the test target (train + validation items),
the interactions the deep models' test inputs hold (EASE sees the whole history, not only the
last 50); EASE's l2 and ALS's (implicit) factors / regularization / alpha are picked on the
validation split from a small grid. ``--only two_tower`` turns the training sequences into
two-tower rows (one per training position, its history the items before it, the user's profile
and the item's side columns joined: ``two_tower_split``) and trains the shipped DSSM and
YouTubeDNN configs on them; their user tower pools the history as a bag.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequence_retrieval.py --epochs 40
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequence_retrieval.py --only baselines
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequence_retrieval.py --only baselines sasrec two_tower --seeds 0 1 2 --epochs 200 --patience 10
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequence_retrieval.py --peers runs/bench_sequence_retrieval/rechub_sasrec  # see _rechub_sequence_peer.py

Results go to ``runs/bench_sequence_retrieval/results.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
import yaml

from recstack.config import RunConfig
from recstack.datasets import build_sequences
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.retrieval.baselines import ALS, EASE, Popularity
from recstack.workflows.train import train_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ml100k_sequences"
OUT = ROOT / "runs" / "bench_sequence_retrieval"
KS = (10, 50)
CONFIGS = {
    "SASRec (full softmax)": "configs/ml100k_sasrec.yaml",
    "GRU4Rec (full softmax)": "configs/ml100k_gru4rec.yaml",
    "genres: SASRec + item genre per position (full softmax)": "configs/ml100k_sasrec_genres.yaml",
}
EXTRA = {
    "SASRec (sampled softmax, log-Q, 256 negatives)": ("configs/ml100k_sasrec.yaml", {"task": {"type": "retrieval", "loss": "sampled_softmax", "num_negatives": 256}}),
    "SASRec (paper BCE, 1 negative)": ("configs/ml100k_sasrec.yaml", {"task": {"type": "retrieval", "loss": "sampled_bce"}}),
}
# order-blind two-tower models on the same split, their shipped configs: the user tower pools the
# history as a bag (plus the user's profile), trained on one row per training position
TWO_TOWER = {
    "two_tower: DSSM (in-batch softmax, log-Q, history as a bag)": "configs/ml100k_dssm.yaml",
    "two_tower: YouTubeDNN (in-batch softmax, log-Q, history as a bag)": "configs/ml100k_youtube_dnn.yaml",
}
TWO_TOWER_DATA = OUT / "two_tower_data"
ALS_GRID = [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (0.01, 1.0) for a in (1.0, 10.0)]


def _lists(table, column: str) -> list[np.ndarray]:
    offsets = table.column(column).combine_chunks().offsets.to_numpy()
    values = table.column(column).combine_chunks().values.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def baselines() -> dict[str, dict[str, float]]:
    """Popularity and EASE on the leave-one-out split (items as matrix columns 0..N-1)."""
    items = pq.read_table(DATA / "items.parquet")["item_id"].to_numpy()
    column = {int(i): c for c, i in enumerate(items)}
    seen = pq.read_table(DATA / "seen.parquet")
    results = {}
    for split in ("valid", "test"):
        rows = pq.read_table(DATA / f"{split}.parquet")
        users = rows["user_id"].to_numpy()
        history = {int(u): h for u, h in zip(seen["user_id"].to_numpy(), _lists(seen, "seen_item_ids"))}
        if split == "test":  # the validation target is history when scoring test
            valid = pq.read_table(DATA / "valid.parquet")
            for u, i in zip(valid["user_id"].to_numpy(), valid["item_id"].to_numpy()):
                history[int(u)] = np.r_[history[int(u)], i]
        matrix_rows = [np.array([column[int(i)] for i in history[int(u)]]) for u in users]
        X = sp.csr_matrix((np.ones(sum(map(len, matrix_rows)), np.float32), np.concatenate(matrix_rows), np.r_[0, np.cumsum([len(r) for r in matrix_rows])]), shape=(len(users), len(items)))
        X.sum_duplicates()
        X.data[:] = 1.0
        inputs = _lists(rows, "hist_item_ids")
        exclude = (np.r_[0, np.cumsum([len(h) for h in inputs])], np.array([column[int(i)] for h in inputs for i in h]))
        targets = np.array([column[int(i)] for i in rows["item_id"].to_numpy()])
        results[split] = (X, exclude, targets)
    out = {}
    X, exclude, targets = results["test"]
    started = time.perf_counter()
    out["Popularity"] = {**evaluate_ranked_scores(Popularity().fit(X).score, targets, exclude=exclude, ks=KS), "train_s": time.perf_counter() - started}
    Xv, exclude_v, targets_v = results["valid"]
    best = max((50.0, 100.0, 200.0, 500.0, 1000.0), key=lambda l2: evaluate_ranked_scores(EASE(l2=l2).fit(Xv).score, targets_v, exclude=exclude_v, ks=KS)["ndcg@10"])
    started = time.perf_counter()
    model = EASE(l2=best).fit(X)
    out[f"EASE (l2 {best:g}, picked on valid)"] = {**evaluate_ranked_scores(model.score, targets, exclude=exclude, ks=KS), "train_s": time.perf_counter() - started}
    chosen = max(ALS_GRID, key=lambda p: evaluate_ranked_scores(ALS(**p).fit(Xv).score, targets_v, exclude=exclude_v, ks=KS)["ndcg@10"])
    started = time.perf_counter()
    model = ALS(**chosen).fit(X)
    label = "ALS (implicit; factors {factors}, reg {regularization:g}, alpha {alpha:g}, picked on valid)".format(**chosen)
    out[label] = {**evaluate_ranked_scores(model.score, targets, exclude=exclude, ks=KS), "train_s": time.perf_counter() - started}
    return out


def two_tower_split(out: Path) -> Path:
    """The leave-one-out split as two-tower rows (the ``movielens_retrieval`` columns) in ``out``.

    Training: one row per training position of the sequence rows, its target the next item and
    its history the items before it in the same row (what SASRec's position reads: at most 50);
    validation and test: the sequence split's rows. The user's profile and each item's genres and
    year are joined from users/items.parquet; a history's genres are its items' primary genres.
    No ``seen`` file: every method's evaluation excludes the row's input items only.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    items = pq.read_table(DATA / "items.parquet")
    users = pq.read_table(DATA / "users.parquet")
    item_row = np.full(int(pc.max(items["item_id"]).as_py()) + 1, -1)
    item_row[items["item_id"].to_numpy()] = np.arange(items.num_rows)
    user_row = np.full(int(pc.max(users["user_id"]).as_py()) + 1, -1)
    user_row[users["user_id"].to_numpy()] = np.arange(users.num_rows)

    def with_sides(user_ids: np.ndarray, item_ids: np.ndarray, histories: pa.ListArray) -> pa.Table:
        profile = users.take(pa.array(user_row[user_ids])).drop_columns(["user_id"])
        item = items.take(pa.array(item_row[item_ids])).select(["title", "genres", "genre", "release_year"])
        genre_of = items["genre"].combine_chunks().take(pa.array(item_row[histories.values.to_numpy()]))
        hist_genres = pa.ListArray.from_arrays(histories.offsets, genre_of)
        columns = {"user_id": user_ids, "item_id": item_ids, "hist_item_ids": histories, "hist_genres": hist_genres}
        return pa.table({**columns, **{c: profile[c] for c in profile.column_names}, **{c: item[c] for c in item.column_names}})

    out.mkdir(parents=True, exist_ok=True)
    train = pq.read_table(DATA / "train.parquet")
    history = train["hist_item_ids"].combine_chunks()
    targets = train["target_item_ids"].combine_chunks()
    starts, lengths = history.offsets.to_numpy()[:-1], np.diff(history.offsets.to_numpy())  # per row
    row_of = np.repeat(np.arange(train.num_rows), lengths)  # per position
    step = np.arange(len(row_of)) - np.repeat(starts - starts[0], lengths)  # t within its row
    sizes = step + 1  # position t reads items 0..t of its row
    offsets = np.r_[0, np.cumsum(sizes)]
    take = np.repeat(starts[row_of] - offsets[:-1], sizes) + np.arange(offsets[-1])  # flat indexes into history.values
    histories = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), history.values.take(pa.array(take)))
    user_ids = train["user_id"].to_numpy()[row_of]
    pq.write_table(with_sides(user_ids, targets.values.to_numpy(), histories), out / "train.parquet")
    for split in ("valid", "test"):
        rows = pq.read_table(DATA / f"{split}.parquet")
        table = with_sides(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(), rows["hist_item_ids"].combine_chunks())
        pq.write_table(table, out / f"{split}.parquet")
    pq.write_table(items, out / "items.parquet")
    return out


def deep(name: str, config_path: str, overrides: dict, epochs: int, patience: int, seed: int = 0, data: dict | None = None) -> dict[str, float]:
    raw = yaml.safe_load((ROOT / config_path).read_text())
    raw.update(overrides)
    raw["seed"] = seed
    raw["trainer"] = {**raw["trainer"], "seed": seed}
    raw["data"] = data or {"dataset": "movielens_sequences", "dir": str(DATA)}
    raw["schema"] = str(ROOT / raw["schema"])
    raw["output"] = str(OUT / (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + (f"_seed{seed}" if seed else "")))
    raw["trainer"] = {**raw["trainer"], "epochs": epochs, "patience": patience, "progress": False, "monitor": "ndcg@10"}
    config = RunConfig.from_dict(raw, base_dir=ROOT)
    metrics = train_run(config, log=lambda _: None, overwrite=True)
    stats = json.loads((DATA / "stats.json").read_text())
    positions = stats["train_positions"] * metrics["epochs_run"]
    return {
        **{k: float(v) for k, v in metrics["test"].items()},
        "train_s": float(metrics["train_seconds"]), "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "positions_per_s": positions / float(metrics["train_seconds"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # of the whole process so far
    }  # fmt: skip


def peer(folder: Path) -> dict[str, float]:
    """Metrics of a peer's vectors (``_rechub_sequence_peer.py``, ``_recbole_sequence_peer.py``): the
    epoch best on validation NDCG@10 (recstack's early-stopping rule), its test vectors scored as
    the recstack runs (every catalogue item, the row's input items excluded)."""
    from recstack.data.held_out import held_out
    from recstack.data.sources import DataSource

    item_ids = np.load(folder / "item_ids.npy")
    items = np.load(folder / "item_vectors.npy")  # (E, N, D)
    user_ids = np.load(folder / "user_ids.npy")  # valid/test file order

    def score(split: str, epoch: int) -> dict[str, float]:
        users = torch.from_numpy(np.load(folder / f"{split}_user_vectors.npy")[epoch])
        assert (pq.read_table(DATA / f"{split}.parquet")["user_id"].to_numpy() == user_ids).all()
        rows = held_out(DataSource(paths=(str(DATA / f"{split}.parquet"),)), None, item_ids, user_column="user_id", item_column="item_id", exclude_columns=["hist_item_ids"])
        chosen, items_t = users[torch.from_numpy(rows.rows)], torch.from_numpy(items[epoch]).T
        return evaluate_ranked_scores(lambda r: chosen[r[0] : r[-1] + 1] @ items_t, rows.targets, exclude=(rows.exclude_indptr, rows.exclude_indices), ks=KS)

    valid = [score("valid", e)["ndcg@10"] for e in range(len(items))]
    best = int(np.argmax(valid))
    stats = json.loads((folder / "stats.json").read_text())
    seconds = float(sum(stats["epoch_seconds"]))
    return {
        **{k: float(v) for k, v in score("test", best).items()}, "train_s": seconds, "epochs": len(items), "best_epoch": best + 1,
        "positions_per_s": stats["samples_per_s"], "peak_rss_mb": stats["peak_rss_mb"],
    }  # fmt: skip


def tower_timing(run_dir: Path, repeats: int = 300) -> dict[str, float]:
    """Median ms of one request's user vector (B = 1, a 50-item history): eager vs ONNX Runtime,
    the two forms ``recstack serve`` picks from (``serving.user_encoder.UserEncoder``)."""
    from recstack.data.batch import Batch
    from recstack.export.run_folder import load_run
    from recstack.serving.user_encoder import UserEncoder

    run = load_run(run_dir)
    history = torch.randint(2, 1000, (1, 50))
    batch = Batch(sequences={"hist_item_ids": history})
    out = {}
    for name, onnx in (("eager", False), ("onnxruntime", True)):
        encoder = UserEncoder(run.model, example=Batch(sequences={"hist_item_ids": torch.randint(2, 1000, (16, 50))}), onnx=onnx)
        assert encoder.backend == name, encoder.backend
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            encoder(batch)
            times.append(time.perf_counter() - started)
        out[f"user_tower_{name}_ms"] = 1000 * float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="baselines, sasrec, gru4rec, genres, variants, two_tower")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="deep models: one run per seed (results keyed 'name, seed s' beyond seed 0)")
    parser.add_argument("--peers", nargs="*", type=Path, default=None, help="peer folders (_rechub_sequence_peer.py, _recbole_sequence_peer.py) to score, then print the table")
    parser.add_argument("--tower-timing", type=Path, default=None, help="a sequence run folder: time its user tower, eager vs ONNX, and exit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tower_timing is not None:
        print(json.dumps(tower_timing(args.tower_timing), indent=2))
        return
    build_sequences(DATA)
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    chosen = set(args.only or ["baselines", "sasrec", "gru4rec", "genres", "variants"]) if args.peers is None else set()
    for folder in args.peers or []:
        label = json.loads((folder / "stats.json").read_text()).get("model", "torch-rechub 0.9.0")
        results[f"{label}: {folder.name}"] = peer(folder)
    if "baselines" in chosen:
        results = {k: v for k, v in results.items() if not k.startswith(("Popularity", "EASE", "ALS"))}
        results.update(baselines())
    if "two_tower" in chosen:  # built once: every seed trains on the same rows
        folder = two_tower_split(TWO_TOWER_DATA)
        two_tower_data = {**{split: str(folder / f"{split}.parquet") for split in ("train", "valid", "test")}, "catalog": str(folder / "items.parquet")}
    for seed in args.seeds:
        key = (lambda name: name) if seed == 0 else (lambda name: f"{name}, seed {seed}")  # noqa: E731
        for name, path in CONFIGS.items():
            if name.split(" ")[0].lower().rstrip(":") in chosen:
                results[key(name)] = deep(name, path, {}, args.epochs, args.patience, seed)
        if "variants" in chosen:
            for name, (path, overrides) in EXTRA.items():
                results[key(name)] = deep(name, path, overrides, args.epochs, args.patience, seed)
        if "two_tower" in chosen:
            for name, path in TWO_TOWER.items():  # the training rows are in user order: shuffle them all
                overrides = {"loader": {"batch_size": 512, "shuffle_buffer": 1_000_000}}
                results[key(name)] = deep(name, path, overrides, args.epochs, args.patience, seed, data=two_tower_data)
        results_path.write_text(json.dumps(results, indent=2, default=float))  # each seed as it finishes
    results_path.write_text(json.dumps(results, indent=2, default=float))
    print("| method | Recall@10 | NDCG@10 | Recall@50 | MRR | train s | epochs (best) | positions/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in results.items():
        print(
            f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@50']:.4f} | {m['mrr']:.4f} | {m['train_s']:.1f} | "
            f"{m.get('epochs', '-')} ({m.get('best_epoch', '-')}) | {m.get('positions_per_s', 0):.0f} | {m.get('peak_rss_mb', 0):.0f} |"
        )  # fmt: skip


if __name__ == "__main__":
    main()
