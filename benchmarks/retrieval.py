"""Retrieval benchmark on MovieLens-100K leave-last-positive-out (data/ml100k_retrieval).

Every method is scored by the same code: full-corpus ranking of all 1,682 items for each of the
942 test users, the items in ``seen.parquet`` excluded, through
``recstack.evaluation.retrieval_metrics`` (``evaluate_ranked_scores`` for the baselines,
``evaluate_retrieval`` for vectors) with the targets and exclusions of
``recstack.workflows.retrieval.held_out``. The deep models are trained by ``train_run``, whose
test metrics come from that same ``held_out`` + ``evaluate_retrieval`` path.

Protocol, per family:

* baselines (popularity, item-kNN, EASE, ALS) and item2vec: hyper-parameters picked on the
  valid split from a small grid (fit on train positives), then refitted on train + valid
  positives for test: a test user's history then holds the same items the deep models' test
  rows carry in ``hist_item_ids`` (which include the validation positive).
* recstack DSSM / YouTubeDNN: the shipped configs, trained on train, early-stopped on valid
  Recall@50, one run per seed.
* torch-rechub DSSM / YouTubeDNN: ``benchmarks/_rechub_peer.py`` run in its own venv (torch-rechub
  is not a recstack dependency); it reads the same parquet files and writes user / item vectors
  to .npy, which are scored here.

Usage::

    .venv/bin/python benchmarks/retrieval.py                      # everything, seeds 0 1 2
    .venv/bin/python benchmarks/retrieval.py --only baselines item2vec
    .venv/bin/python benchmarks/retrieval.py --rechub-python /work/bench-venv-rechub/bin/python

Results go to ``runs/bench_retrieval/results.json`` (every seed) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores, evaluate_retrieval
from recstack.pretrain import mean_pool, train_item2vec
from recstack.retrieval.baselines import ALS, EASE, ItemKNN, Popularity
from recstack.workflows.retrieval import HeldOut, held_out
from recstack.workflows.train import train_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ml100k_retrieval"
KS = (10, 50)
COLUMNS = ("recall@10", "recall@50", "ndcg@10", "mrr")
DEEP_CONFIGS = {
    "recstack DSSM (in-batch softmax, log-Q)": "configs/ml100k_dssm.yaml",
    "recstack DSSM (negative sampling)": "configs/ml100k_dssm_negative_sampling.yaml",
    "recstack YouTubeDNN (in-batch softmax, log-Q)": "configs/ml100k_youtube_dnn.yaml",
}
RECHUB_MODELS = {"torch-rechub DSSM": "dssm", "torch-rechub YouTubeDNN": "youtube_dnn"}
PARTS = ("baselines", "item2vec", "deep", "rechub")


# ---- the split, the same for everyone ---------------------------------------------------------
class Split:
    """Catalogue, interactions and held-out targets of one evaluation split (valid or test)."""

    def __init__(self, name: str):
        self.name = name
        items = pq.read_table(DATA / "items.parquet", columns=["item_id"])
        self.catalog_ids = items["item_id"].to_numpy()  # (N,)
        self.held: HeldOut = held_out(
            DataSource.from_config(str(DATA / f"{name}.parquet")),
            DataSource.from_config(str(DATA / "seen.parquet")),
            self.catalog_ids,
            user_column="user_id",
            item_column="item_id",
        )
        rows = pq.read_table(DATA / f"{name}.parquet", columns=["user_id", "hist_item_ids"])
        by_user = dict(zip(rows["user_id"].to_pylist(), rows["hist_item_ids"].to_pylist()))
        self.histories = [by_user[u] for u in self.held.user_ids.tolist()]  # the deep models' input

        # Fit data: train positives (valid split) or train + valid positives (test split).
        files = ["train"] if name == "valid" else ["train", "valid"]
        cols = ["user_id", "item_id", "timestamp"]
        fit = [pq.read_table(DATA / f"{f}.parquet", columns=cols) for f in files]
        users = np.concatenate([t["user_id"].to_numpy() for t in fit])
        items_ = np.concatenate([t["item_id"].to_numpy() for t in fit])
        times = np.concatenate([t["timestamp"].to_numpy() for t in fit])
        # evaluated users take rows 0..U-1 in held-out order (the evaluator's user rows); the rest follow
        others = np.setdiff1d(np.unique(users), self.held.user_ids)
        order = np.concatenate([self.held.user_ids, others])
        row_of = {u: r for r, u in enumerate(order.tolist())}
        col_of = {i: c for c, i in enumerate(self.catalog_ids.tolist())}
        rows_ = np.array([row_of[u] for u in users.tolist()])
        cols_ = np.array([col_of[i] for i in items_.tolist()])
        self.matrix = sp.csr_matrix((np.ones(len(rows_), np.float32), (rows_, cols_)), shape=(len(order), len(self.catalog_ids)))
        self.matrix.data[:] = 1.0  # binary: a repeated positive counts once
        sequence_order = np.lexsort((items_, times, users))
        self.sequences = _group(users[sequence_order], items_[sequence_order])

    @property
    def exclude(self) -> tuple[np.ndarray, np.ndarray]:
        return self.held.exclude_indptr, self.held.exclude_indices

    def score(self, score_fn) -> dict[str, float]:
        return evaluate_ranked_scores(score_fn, self.held.targets, exclude=self.exclude, ks=KS)

    def score_vectors(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> dict[str, float]:
        """``(U, D)`` user vectors in held-out order, ``(N, D)`` in catalogue order; dot product."""
        return evaluate_retrieval(
            torch.from_numpy(np.ascontiguousarray(user_vectors, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32)),
            self.held.targets,
            exclude=self.exclude,
            ks=KS,
        )


def _group(users: np.ndarray, items: np.ndarray) -> list[list[str]]:
    """Item ids (as strings) per user, for arrays already sorted by user."""
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return [chunk.astype(str).tolist() for chunk in np.split(items, starts[1:])]


# ---- baselines --------------------------------------------------------------------------------
BASELINE_GRIDS = {
    "popularity": (lambda: Popularity(), [{}]),
    "item-kNN": (lambda **p: ItemKNN(**p), [{"k": k, "shrink": s} for k in (50, 200) for s in (0.0, 20.0)]),
    "EASE": (lambda **p: EASE(**p), [{"l2": l2} for l2 in (100.0, 300.0, 1000.0)]),
    "ALS": (
        lambda **p: ALS(iterations=15, random_state=0, **p),
        [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (0.01, 1.0) for a in (1.0, 10.0)],
    ),
}


def run_baselines(valid: Split, test: Split) -> dict[str, dict]:
    results = {}
    for name, (make, grid) in BASELINE_GRIDS.items():
        started = time.perf_counter()
        best = max(grid, key=lambda p: valid.score(make(**p).fit(valid.matrix).score)["recall@50"])
        metrics = test.score(make(**best).fit(test.matrix).score)
        results[name] = {"params": best, "seconds": round(time.perf_counter() - started, 1), "runs": {"-": metrics}}
        _log(name, best, metrics)
    return results


# ---- item2vec ---------------------------------------------------------------------------------
ITEM2VEC_GRID = [{"dim": 64, "window": w, "epochs": e} for w in (5, 50) for e in (10, 30)]


def run_item2vec(valid: Split, test: Split, seeds: list[int]) -> dict[str, dict]:
    def evaluate(split: Split, params: dict, seed: int) -> dict[str, float]:
        table = train_item2vec(split.sequences, seed=seed, workers=1, **params)
        users, _ = mean_pool(table, [[str(i) for i in h] for h in split.histories])  # (U, D)
        items, found = table.lookup([str(i) for i in split.catalog_ids.tolist()])  # (N, D)
        items = np.where(found[:, None], items, 0.0)  # an item never in a sequence scores 0
        return split.score_vectors(_unit(users), _unit(items))  # cosine

    started = time.perf_counter()
    best = max(ITEM2VEC_GRID, key=lambda p: evaluate(valid, p, seeds[0])["recall@50"])
    runs = {str(s): evaluate(test, best, s) for s in seeds}
    _log("item2vec", best, _median(runs))
    return {"item2vec (mean of history, cosine)": {"params": best, "seconds": round(time.perf_counter() - started, 1), "runs": runs}}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---- recstack deep models ---------------------------------------------------------------------
def run_deep(seeds: list[int], out: Path) -> dict[str, dict]:
    results = {}
    for name, config in DEEP_CONFIGS.items():
        runs, seconds = {}, []
        for seed in seeds:
            run_dir = out / f"{Path(config).stem}_seed{seed}"
            cfg = RunConfig.from_yaml(ROOT / config, {"seed": seed, "output": str(run_dir)})
            metrics = train_run(cfg, overwrite=True, log=lambda _: None)
            runs[str(seed)] = metrics["test"]
            seconds.append(metrics["train_seconds"])
            _log(f"{name} seed {seed}", {"best_epoch": metrics["best_epoch"]}, metrics["test"])
        results[name] = {"config": config, "seconds": round(statistics.median(seconds), 1), "runs": runs}
    return results


# ---- torch-rechub, in its own venv ------------------------------------------------------------
def run_rechub(test: Split, seeds: list[int], out: Path, python: str, epochs: int) -> dict[str, dict]:
    results = {}
    for name, model in RECHUB_MODELS.items():
        runs, seconds = {}, []
        for seed in seeds:
            folder = out / f"rechub_{model}_seed{seed}"
            started = time.perf_counter()
            command = [python, str(ROOT / "benchmarks" / "_rechub_peer.py"), "--data", str(DATA), "--out", str(folder), "--model", model, "--seed", str(seed), "--epochs", str(epochs)]
            subprocess.run(command, check=True)
            seconds.append(time.perf_counter() - started)
            runs[str(seed)] = score_vector_folder(test, folder)
            _log(f"{name} seed {seed}", {}, runs[str(seed)])
        results[name] = {"epochs": epochs, "seconds": round(statistics.median(seconds), 1), "runs": runs}
    return results


def score_vector_folder(test: Split, folder: Path) -> dict[str, float]:
    """Score ``{user,item}_{ids,vectors}.npy`` written by a peer with recstack's evaluator."""
    user_ids, user_vectors = np.load(folder / "user_ids.npy"), np.load(folder / "user_vectors.npy")
    item_ids, item_vectors = np.load(folder / "item_ids.npy"), np.load(folder / "item_vectors.npy")
    user_row = {u: r for r, u in enumerate(user_ids.tolist())}
    item_row = {i: r for r, i in enumerate(item_ids.tolist())}
    users = user_vectors[[user_row[u] for u in test.held.user_ids.tolist()]]  # held-out order
    items = item_vectors[[item_row[i] for i in test.catalog_ids.tolist()]]  # catalogue order
    return test.score_vectors(users, items)


# ---- report -----------------------------------------------------------------------------------
def _median(runs: dict[str, dict]) -> dict[str, float]:
    return {c: statistics.median(r[c] for r in runs.values()) for c in COLUMNS}


def table(results: dict[str, dict]) -> str:
    lines = [
        "| method | R@10 | R@50 | NDCG@10 | MRR | seeds | R@50 per seed | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        med = _median(result["runs"])
        seeds = ", ".join(result["runs"]) if len(result["runs"]) > 1 or "-" not in result["runs"] else "- (deterministic)"
        per_seed = " / ".join(f"{r['recall@50']:.3f}" for r in result["runs"].values())
        cells = " | ".join(f"{med[c]:.3f}" for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {seeds} | {per_seed} | {result.get('seconds', '')} |")
    return "\n".join(lines)


def _log(name: str, params: dict, metrics: dict) -> None:
    shown = " ".join(f"{c}={metrics[c]:.3f}" for c in COLUMNS)
    print(f"[retrieval-bench] {name} {params} {shown}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=(*PARTS, "report"), default=list(PARTS), help="report: only print the table of --out/results.json")
    parser.add_argument("--rechub-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    parser.add_argument("--rechub-epochs", type=int, default=10)
    parser.add_argument("--rechub-python", default="/work/bench-venv-rechub/bin/python")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_retrieval")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # shared cores; every timing below is single-threaded
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    valid, test = (Split("valid"), Split("test")) if set(args.only) & set(PARTS) else (None, None)
    if "baselines" in args.only:
        results.update(run_baselines(valid, test))
    if "item2vec" in args.only:
        results.update(run_item2vec(valid, test, args.seeds))
    if "deep" in args.only:
        results.update(run_deep(args.seeds, args.out))
    if "rechub" in args.only:
        results.update(run_rechub(test, args.rechub_seeds or args.seeds, args.out, args.rechub_python, args.rechub_epochs))
    results = {**json.loads(results_path.read_text()), **results} if results_path.exists() else results
    results_path.write_text(json.dumps(results, indent=1, default=str))
    order = ["popularity", "item-kNN", "EASE", "ALS", "item2vec (mean of history, cosine)", *DEEP_CONFIGS, *RECHUB_MODELS]
    print(table({k: results[k] for k in order if k in results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
