"""The main job (``make demo``): MovieLens-100K from the event table to recommendations.

1. trains DIN on the CTR task (split by time) and prints its test AUC and GAUC;
2. trains the two-tower DSSM on leave-last-positive-out retrieval and prints its full-corpus
   Recall/NDCG/MRR;
3. prints one user's history and their top-10 recommended titles (recall then rank);
4. prints the command that starts the recommendation service and its demo page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recstack.config import RunConfig
from recstack.data.sources import DataSource
from recstack.export.run_folder import load_run
from recstack.workflows.retrieval import embed_items, embed_users, held_out
from recstack.workflows.train import train_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recstack.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=".", help="the recstack checkout (holds configs/ and schemas/)")
    parser.add_argument("--user", type=int, default=1, help="the user whose recommendations are printed")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.epochs (quick checks)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    project = Path(args.project)
    overrides = {"trainer.epochs": args.epochs} if args.epochs else {}

    print("== 1. DIN on the MovieLens-100K CTR task (global time split)", flush=True)
    din = RunConfig.from_yaml(project / "configs/ml100k_din.yaml", overrides={**overrides, "trainer.progress": False})
    metrics = train_run(din, overwrite=True)  # a re-run of the demo replaces its own runs
    test = metrics["test"]
    print(f"DIN test AUC {test['auc']:.4f}  GAUC {test['gauc']:.4f}  logloss {test['logloss']:.4f}  "
          f"({metrics['samples_per_second']:.0f} training samples/s, run folder {din.output})")

    print("\n== 2. Two-tower DSSM on leave-last-positive-out retrieval (full item corpus)", flush=True)
    dssm = RunConfig.from_yaml(project / "configs/ml100k_dssm.yaml", overrides={**overrides, "trainer.progress": False})
    metrics = train_run(dssm, overwrite=True)
    test = metrics["test"]
    print("DSSM test " + "  ".join(f"{k} {v:.4f}" for k, v in test.items() if k != "users") + f"  ({int(test['users'])} users)")

    print(f"\n== 3. User {args.user}: history and top-10 recommendations", flush=True)
    show_user(dssm, args.user)

    print("\n== 4. Serve recall + rank over HTTP, with the demo page:")
    data = Path(dssm.data.dataset_dir or "data/ml100k_retrieval")
    print(
        f"   .venv/bin/recstack serve --retrieval {dssm.output} --ranker {din.output} "
        f"--catalog {data / 'items.parquet'} --users {data / 'users.parquet'} --history {data / 'train.parquet'} --port 8000\n"
        "   then open http://127.0.0.1:8000/?user=1   (or run: make serve)"
    )
    return 0


def show_user(config: RunConfig, user_id: int, k: int = 10) -> None:
    run = load_run(config.output)
    catalog = config.data.catalog
    items = pq.read_table(catalog.paths[0], columns=["item_id", "title", "genres"]).to_pydict()
    titles = dict(zip(items["item_id"], items["title"]))
    genres = dict(zip(items["item_id"], items["genres"]))
    test = pq.read_table(config.data.test.paths[0])
    row = test.filter(pc.equal(test.column("user_id"), user_id))
    if row.num_rows == 0:
        print(f"user {user_id} has no held-out test row")
        return
    history = row.column("hist_item_ids")[0].as_py()
    print(f"history (last {min(10, len(history))} of {len(history)} liked, oldest first):")
    for item in history[-10:]:
        print(f"   {titles.get(item, item)}  [{', '.join(genres.get(item) or [])}]")
    single = Path(config.output) / "demo_user.parquet"
    pq.write_table(row, single)
    catalog_ids, item_vectors = embed_items(run.model, run.preprocessor, catalog)
    _, user_vectors = embed_users(run.model, run.preprocessor, DataSource(paths=(str(single),)))
    targets = held_out(DataSource(paths=(str(single),)), config.data.seen, catalog_ids, user_column="user_id", item_column="item_id")
    scores = item_vectors @ user_vectors[0]
    scores[targets.exclude_indices] = -np.inf  # already seen in training
    top = np.argsort(-scores)[:k]
    held = int(row.column("item_id")[0].as_py())
    print(f"top-{k} recommendations (held-out next liked movie: {titles.get(held, held)}):")
    for rank, index in enumerate(top, 1):
        item = int(catalog_ids[index])
        mark = "  <- the held-out movie" if item == held else ""
        print(f"{rank:>4}. {titles.get(item, item)}  [{', '.join(genres.get(item) or [])}]  score {scores[index]:.3f}{mark}")
    single.unlink()


if __name__ == "__main__":
    sys.exit(main())
