"""Multi-interest recall benchmark on MovieLens-100K leave-one-out sequences (``recstack datasets
movielens-sequences``): ComiRec-SA and MIND (K = 4 interests, merged by max score) beside SASRec
and GRU4Rec, each trained by ``train_run`` from its shipped config, on the same split, the same
sequence length (50), the same item embedding (64) and loss (full softmax), the same scoring.

Every method ranks all 1,682 items for each of the 943 test users, the test input's items
excluded (``recstack.data.held_out`` inside ``train_run``'s test evaluation); a K-interest user's
score of an item is its best interest's (``recstack.evaluation.multi_interest``). Training time is
the trainer's (1 thread), validation included; epochs are capped (``--epochs``) with early
stopping on validation NDCG@10 (``--patience``).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multi_interest.py --epochs 40 --patience 5
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multi_interest.py --only comirec_dr comirec_sa_k1 mind_k1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multi_interest.py --only mind --epochs 100
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multi_interest.py --rechub runs/bench_multi_interest/rechub_mind  # see _rechub_multi_interest_peer.py

Results go to ``runs/bench_multi_interest/results.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from recstack.config import RunConfig
from recstack.datasets import build_sequences
from recstack.workflows.train import train_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ml100k_sequences"
OUT = ROOT / "runs" / "bench_multi_interest"
KS = [10, 20, 50]
# key: (label, config, model section replacing the config's (None keeps it), trainer keys changed)
CONFIGS: dict[str, tuple[str, str, dict | None, dict]] = {
    "comirec_sa": ("ComiRec-SA (K=4)", "configs/ml100k_comirec_sa.yaml", None, {}),
    "mind": ("MIND (K=4, dynamic K'_u)", "configs/ml100k_mind.yaml", None, {}),
    "comirec_dr": ("ComiRec-DR (K=4)", "configs/ml100k_comirec_sa.yaml", {"name": "comirec_dr", "params": {"num_interests": 4}}, {}),
    "comirec_sa_k1": ("ComiRec-SA, one interest (K=1)", "configs/ml100k_comirec_sa.yaml", {"name": "comirec_sa", "params": {"num_interests": 1}}, {}),
    "comirec_sa_soft": ("ComiRec-SA (K=4), soft readout p=1", "configs/ml100k_comirec_sa.yaml", {"name": "comirec_sa", "params": {"num_interests": 4, "readout": "soft", "attention_pow": 1}}, {}),
    "mind_k1": ("MIND, one interest (K=1)", "configs/ml100k_mind.yaml", {"name": "mind", "params": {"num_interests": 1}}, {}),
    "mind_lr5e-3": ("MIND (K=4), lr 5e-3", "configs/ml100k_mind.yaml", None, {"lr": 0.005}),
    "comirec_dr_lr5e-3": ("ComiRec-DR (K=4), lr 5e-3", "configs/ml100k_comirec_sa.yaml", {"name": "comirec_dr", "params": {"num_interests": 4}}, {"lr": 0.005}),
    "sasrec": ("SASRec", "configs/ml100k_sasrec.yaml", None, {}),
    "gru4rec": ("GRU4Rec", "configs/ml100k_gru4rec.yaml", None, {}),
}


def deep(key: str, epochs: int, patience: int) -> dict[str, float]:
    _, config_path, model, trainer = CONFIGS[key]
    raw = yaml.safe_load((ROOT / config_path).read_text())
    if model is not None:
        raw["model"] = model
    raw["data"] = {"dataset": "movielens_sequences", "dir": str(DATA)}
    raw["schema"] = str(ROOT / raw["schema"])
    raw["output"] = str(OUT / key)
    raw["evaluation"] = {**raw.get("evaluation", {}), "ks": KS}
    raw["trainer"] = {**raw["trainer"], **trainer, "epochs": epochs, "patience": patience, "progress": False}
    config = RunConfig.from_dict(raw, base_dir=ROOT)
    metrics = train_run(config, log=lambda _: None, overwrite=True)
    return {
        **{k: float(v) for k, v in metrics["test"].items()},
        "train_s": float(metrics["train_seconds"]), "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "s_per_epoch": float(metrics["train_seconds"]) / max(1, metrics["epochs_run"]),
    }  # fmt: skip


def rechub(folder: Path) -> dict[str, float]:
    """Metrics of a torch-rechub peer's vectors (``benchmarks/_rechub_multi_interest_peer.py``),
    scored as the recstack runs: every catalogue item, the best interest's score, the test
    input's items excluded."""
    from recstack.data.held_out import held_out
    from recstack.data.sources import DataSource
    from recstack.evaluation.multi_interest import max_interest_scores
    from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores

    item_ids = np.load(folder / "item_ids.npy")
    items_t = torch.from_numpy(np.load(folder / "item_vectors.npy")).T  # (D, N)
    users = torch.from_numpy(np.load(folder / "user_vectors.npy"))  # (U, K, D), test file order
    test = DataSource(paths=(str(DATA / "test.parquet"),))
    targets = held_out(test, None, item_ids, user_column="user_id", item_column="item_id", exclude_columns=["hist_item_ids"], delimiter=",")
    chosen = users[torch.from_numpy(targets.rows)]
    metrics = evaluate_ranked_scores(
        lambda r: max_interest_scores(chosen[r[0] : r[-1] + 1], items_t), targets.targets,
        exclude=(targets.exclude_indptr, targets.exclude_indices), ks=KS,
    )  # fmt: skip
    words = (folder / "train_seconds.txt").read_text().split()  # "<seconds>\n<n> samples x <epochs> epochs"
    seconds, epochs = float(words[0]), int(words[-2])
    return {**{k: float(v) for k, v in metrics.items()}, "train_s": seconds, "epochs": epochs, "best_epoch": epochs, "s_per_epoch": seconds / epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help=", ".join(CONFIGS))
    parser.add_argument("--rechub", nargs="*", type=Path, default=None, help="torch-rechub peer folders to score instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    build_sequences(DATA)
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.rechub:
        for folder in args.rechub:
            results[f"rechub:{folder.name}"] = rechub(folder)
    for key in [] if args.rechub else args.only or ["comirec_sa", "mind", "sasrec", "gru4rec"]:
        results[key] = deep(key, args.epochs, args.patience)
        results_path.write_text(json.dumps(results, indent=2, default=float))  # after each model
    results_path.write_text(json.dumps(results, indent=2, default=float))
    print("| method | Recall@20 | NDCG@20 | Recall@50 | NDCG@50 | Recall@10 | NDCG@10 | train s (epochs, best) | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, m in results.items():
        print(
            f"| {CONFIGS[key][0] if key in CONFIGS else 'torch-rechub ' + key.split(':')[1]} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {m['recall@50']:.4f} | {m['ndcg@50']:.4f} | "
            f"{m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['train_s']:.0f} ({m['epochs']}, {m['best_epoch']}) | {m['s_per_epoch']:.1f} |"
        )


if __name__ == "__main__":
    main()
