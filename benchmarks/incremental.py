"""Daily retraining on MovieLens-100K: incremental (``--init-from``) vs a full retrain.

The ratings are cut by time into ``--days`` equal time spans ("days"). For a model trained on
days 1..k (the parent), the next day arrives and is learned two ways:

- **incremental**: ``train_run(config on day k+1, init_from=parent)``: vocabularies and tables
  grown by the day's new users and items, the parent's weights as the start;
- **full**: a model trained from scratch on days 1..k+1;

both scored on what follows. CTR (``--ctr-model``, DeepFM by default; the shipped config's
model, schema, batch and lr, fixed ``--epochs``, no early stopping): the rows of build_ctr cut
into ``--days`` spans, evaluated on the last day (test AUC / GAUC / logloss). Retrieval (DSSM,
the shipped config): build_retrieval's training events cut into ``--days - 1`` spans, every
user's held-out last positive as the test (Recall@K / NDCG@K over the whole catalogue),
early-stopped on the held-out second-to-last positives as shipped. With ``--chain``, the parent
itself is grown day by day from day 1 (the daily recipe), else it is trained on days 1..k at once.

Each arm's wall time covers everything ``recstack train`` does (preprocessor fit, model build,
training, evaluation, writing the run folder); ``train_seconds`` is the trainer alone.

    .venv/bin/python benchmarks/incremental.py --out /tmp/incremental --repeats 2
    .venv/bin/python benchmarks/incremental.py --numeric update --optimizer-state carry   # other rules

Prints a Markdown table (medians over repeats) and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from recstack.config import RunConfig
from recstack.datasets.movielens import build_ctr, build_retrieval
from recstack.workflows.train import train_run

ROOT = Path(__file__).resolve().parent.parent
CTR_CONFIGS = {"deepfm": ROOT / "configs" / "ml100k_deepfm.yaml", "din": ROOT / "configs" / "ml100k_din.yaml"}
DSSM_CONFIG = ROOT / "configs" / "ml100k_dssm.yaml"


def split_days(table: pa.Table, days: int) -> list[pa.Table]:
    """``days`` tables of the rows in equal time spans (by ``timestamp``), each in time order."""
    timestamps = table.column("timestamp").to_numpy()
    order = np.argsort(timestamps, kind="stable")
    table, timestamps = table.take(pa.array(order)), timestamps[order]
    edges = np.linspace(timestamps.min(), timestamps.max(), days + 1)
    day = np.clip(np.searchsorted(edges, timestamps, side="right") - 1, 0, days - 1)  # (N,)
    starts = np.searchsorted(day, np.arange(days + 1))
    return [table.slice(starts[d], starts[d + 1] - starts[d]) for d in range(days)]


def write_days(tables: list[pa.Table], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, table in enumerate(tables, 1):
        pq.write_table(table, folder / f"day{number}.parquet")
        paths.append(folder / f"day{number}.parquet")
    return paths


INCREMENTAL: dict[str, str] = {}  # the incremental arm's incremental: section (--numeric, --optimizer-state)


def run(raw: dict[str, Any], *, init_from: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    if init_from is not None:
        raw = {**raw, "incremental": dict(INCREMENTAL)}
    config = RunConfig.from_dict(raw, base_dir=ROOT / "configs")
    started = time.perf_counter()
    metrics = train_run(config, overwrite=True, init_from=init_from, log=lambda _: None)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def ctr_arms(args: argparse.Namespace, days: list[Path], test: Path, out: Path, repeat: int) -> dict[str, dict[str, Any]]:
    base = yaml.safe_load(CTR_CONFIGS[args.ctr_model].read_text())
    base["trainer"] = {**base["trainer"], "epochs": args.epochs, "patience": None, "progress": False, "seed": repeat}
    base["seed"] = repeat

    def config(name: str, train: list[Path]) -> dict[str, Any]:
        raw = copy.deepcopy(base)
        raw.update(name=name, output=str(out / name), data={"train": [str(p) for p in train], "test": str(test)})
        return raw

    k = len(days) - 1
    results = {}
    if args.chain:
        parent = out / "day1"
        results["parent"] = run(config("day1", days[:1]))
        for number in range(2, k + 1):
            results["parent"] = run(config(f"day{number}", days[number - 1 : number]), init_from=parent)
            parent = out / f"day{number}"
    else:
        parent = out / f"days1-{k}"
        results["parent"] = run(config(parent.name, days[:k]))
    results["incremental"] = run(config(f"day{k + 1}_incremental", days[k : k + 1]), init_from=parent)
    results["full"] = run(config(f"days1-{k + 1}_full", days[: k + 1]))
    return results


def retrieval_arms(args: argparse.Namespace, days: list[Path], data: Path, out: Path, repeat: int) -> dict[str, dict[str, Any]]:
    base = yaml.safe_load(DSSM_CONFIG.read_text())
    base["trainer"] = {**base["trainer"], "progress": False, "seed": repeat}
    base["seed"] = repeat
    held_out = {key: str(data / f"{key}.parquet") for key in ("valid", "test")}
    shared = {"catalog": str(data / "items.parquet"), "seen": str(data / "seen.parquet"), **held_out}

    def config(name: str, train: list[Path]) -> dict[str, Any]:
        raw = copy.deepcopy(base)
        raw.update(name=name, output=str(out / name), data={"train": [str(p) for p in train], **shared})
        return raw

    k = len(days) - 1
    parent = out / f"days1-{k}"
    return {
        "parent": run(config(parent.name, days[:k])),
        "incremental": run(config(f"day{k + 1}_incremental", days[k : k + 1]), init_from=parent),
        "full": run(config(f"days1-{k + 1}_full", days[: k + 1])),
    }


def summarise(name: str, repeats: list[dict[str, dict[str, Any]]], metrics: tuple[str, ...]) -> list[str]:
    lines = [
        f"\n{name}\n",
        "| arm | " + " | ".join(metrics) + " | tables grown (rows added) | epochs | train s | wall s |",
        "|---" * (len(metrics) + 5) + "|",
    ]
    for arm in ("parent", "incremental", "full"):
        runs = [r[arm] for r in repeats]
        values = [statistics.median(r["test"][m] for r in runs) for m in metrics]
        grown = runs[0].get("incremental", {}).get("tables", {})
        added = ", ".join(f"{t} +{g['added']}" for t, g in grown.items() if g["added"]) or "-"
        lines.append(
            f"| {arm} | " + " | ".join(f"{v:.4f}" for v in values)
            + f" | {added} | {statistics.median(r['epochs_run'] for r in runs):g}"
            + f" | {statistics.median(r['train_seconds'] for r in runs):.1f} | {statistics.median(r['wall_seconds'] for r in runs):.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recstack_incremental"))
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--ctr-model", choices=sorted(CTR_CONFIGS), default="deepfm")
    parser.add_argument("--epochs", type=int, default=2, help="CTR arms' fixed epochs")
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0..N-1; medians reported")
    parser.add_argument("--chain", action="store_true", help="CTR parent grown day by day from day 1")
    parser.add_argument("--skip", choices=("ctr", "retrieval"), action="append", default=[])
    parser.add_argument("--numeric", choices=("keep", "update"), default="keep", help="incremental arm's incremental.numeric")
    parser.add_argument("--optimizer-state", choices=("fresh", "carry"), default="fresh", help="incremental arm's incremental.optimizer_state")
    args = parser.parse_args()
    torch.set_num_threads(1)
    INCREMENTAL.update(numeric=args.numeric, optimizer_state=args.optimizer_state)
    out = args.out
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    lines = [f"MovieLens-100K, {args.days} equal time spans; incremental: {INCREMENTAL}; {time.strftime('%Y-%m-%d')}"]
    if "ctr" not in args.skip:
        build_ctr(out / "ml100k_ctr")
        rows = pa.concat_tables(pq.read_table(out / "ml100k_ctr" / f"{s}.parquet") for s in ("train", "valid", "test"))
        days = write_days(split_days(rows, args.days), out / "ctr_days")
        report["ctr_day_rows"] = [pq.read_metadata(p).num_rows for p in days]
        repeats = [ctr_arms(args, days[:-1], days[-1], out / "ctr_runs" / f"seed{r}", r) for r in range(args.repeats)]
        report["ctr"] = repeats
        lines += summarise(f"CTR {args.ctr_model}, day rows {report['ctr_day_rows']}, test = day {args.days}", repeats, ("auc", "gauc", "logloss"))
    if "retrieval" not in args.skip:
        build_retrieval(out / "ml100k_retrieval")
        events = pq.read_table(out / "ml100k_retrieval" / "train.parquet")
        days = write_days(split_days(events, args.days - 1), out / "retrieval_days")
        report["retrieval_day_rows"] = [pq.read_metadata(p).num_rows for p in days]
        repeats = [retrieval_arms(args, days, out / "ml100k_retrieval", out / "retrieval_runs" / f"seed{r}", r) for r in range(args.repeats)]
        report["retrieval"] = repeats
        lines += summarise(f"Retrieval dssm, event day rows {report['retrieval_day_rows']}, test = each user's last positive", repeats, ("recall@10", "recall@50", "ndcg@10"))
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
