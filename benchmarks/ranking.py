"""recstack vs DeepCTR-Torch on the MovieLens-100K CTR task (time split), side by side.

Every (library, model, seed) run is its own subprocess, so peak RSS is measured per run; the
peer runs ``benchmarks/_deepctr_peer.py`` with a separate venv's python (DeepCTR-Torch is not a
recstack dependency). Same split, embedding 16, MLP 256-128, batch 1024, Adam lr 1e-3, fixed
epochs, one thread. recstack runs twice: on the peer's id-only features, and on every schema
feature (the aggregate rates included); plus an LR on the two positive rates alone.

    .venv/bin/python benchmarks/ranking.py --peer-python /work/bench-venv/bin/python \\
        --seeds 0 1 2 --epochs 2

Prints a Markdown table: medians over seeds, with the min-max spread.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "ml100k_ctr"
SCHEMA = ROOT / "schemas" / "movielens_ctr.yaml"
MODELS = ("wide_deep", "deepfm", "dcn", "din")
ID_FEATURES = ("user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre")
HISTORIES = ("hist_item_ids", "hist_genres")
RATE_FEATURES = ("user_pos_rate", "item_pos_rate")


def model_params(name: str, features: str) -> dict:
    if name == "lr":
        return {"features": list(RATE_FEATURES)}
    chosen = None if features == "all" else list(ID_FEATURES) + (list(HISTORIES) if name == "din" else [])
    params: dict = {"features": chosen, "hidden_dims": [256, 128]}
    if name == "din":
        params.update(
            behaviours=[{"candidate": "item_id", "history": "hist_item_ids"}, {"candidate": "genre", "history": "hist_genres"}],
            attention_hidden_dims=[80, 40],
            activation="relu",  # as the peer's DNN; the attention unit keeps Dice on both sides
        )
        if chosen is not None:
            params["features"] = [f for f in chosen if f not in HISTORIES]
    if name == "dcn":
        params["num_cross_layers"] = 2  # the peer's default cross_num
    if name == "wide_deep" and chosen is not None:
        params["wide_features"] = chosen
    return {k: v for k, v in params.items() if v is not None}


def run_recstack(name: str, features: str, seed: int, epochs: int) -> dict:
    """One training run in this process; returns test metrics, samples/s and peak RSS."""
    import torch

    torch.set_num_threads(1)
    from recstack.data.loader import BatchStream, LoaderConfig
    from recstack.data.preprocessor import Preprocessor
    from recstack.data.sources import DataSource
    from recstack.models import build_model
    from recstack.schema import Schema
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.training import Trainer, TrainerConfig
    from recstack.workflows.tasks import evaluate_source

    schema = Schema.from_yaml(SCHEMA)
    train, test = (DataSource(paths=(str(DATA_DIR / f"{s}.parquet"),)) for s in ("train", "test"))
    preprocessor = Preprocessor(schema).fit(train)
    model = build_model(name, preprocessor.feature_map(), model_params(name, features))
    task = BinaryClassificationTask()
    stream = BatchStream(
        source=train, preprocessor=preprocessor,
        config=LoaderConfig(batch_size=1024, shuffle_buffer=100_000, seed=seed, cache=True),
    )

    def train_batches(epoch: int):
        stream.set_epoch(epoch)
        return stream

    # the 3-weight LR on two rates needs a larger step to move from its init in a few epochs
    lr = 0.05 if name == "lr" else 1e-3
    trainer = Trainer(TrainerConfig.from_dict({"epochs": epochs, "lr": lr, "seed": seed, "log_every_steps": 10_000}))
    started = time.perf_counter()
    state = trainer.fit(model, task, train_batches)
    seconds = time.perf_counter() - started  # the first epoch's transforms included, as the peer's tensor conversion
    metrics = evaluate_source(model, task, preprocessor, test)
    return {
        "auc": metrics["auc"],
        "logloss": metrics["logloss"],
        "samples_per_second": state.samples_seen / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def subprocess_json(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{command} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarise(runs: list[dict], key: str, digits: int) -> str:
    values = [r[key] for r in runs]
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["lr", *MODELS], help="lr = the two-rate LR row")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "FEATURES", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, features, seed = args.worker
        print(json.dumps(run_recstack(name, features, int(seed), args.epochs)))
        return

    rows = []  # (library, model, features, runs)
    plan = [("recstack", "lr", "rates")] if "lr" in args.models else []
    for name in (m for m in args.models if m != "lr"):
        plan += [("DeepCTR-Torch", name, "ids"), ("recstack", name, "ids"), ("recstack", name, "all")]
    for library, name, features in plan:
        runs = []
        for seed in args.seeds:
            if library == "recstack":
                command = [sys.executable, __file__, "--epochs", str(args.epochs), "--worker", name, features, str(seed)]
            else:
                command = [args.peer_python, str(ROOT / "benchmarks" / "_deepctr_peer.py"), str(DATA_DIR), name, str(seed), str(args.epochs)]
            runs.append(subprocess_json(command))
            print(f"# {library} {name} {features} seed {seed}: {runs[-1]}", file=sys.stderr, flush=True)
        rows.append((library, name, features, runs))

    print(f"| library | model | features | test AUC | test logloss | train samples/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for library, name, features, runs in rows:
        print(
            f"| {library} | {name} | {features} | {summarise(runs, 'auc', 4)} | {summarise(runs, 'logloss', 4)} "
            f"| {summarise(runs, 'samples_per_second', 0)} | {summarise(runs, 'peak_rss_mib', 0)} |"
        )


if __name__ == "__main__":
    main()
