"""SASRec's training rate beside torch-rechub 0.9.0's SASRec, back to back, in rounds.

Each round runs, one after another and each in its own process on one thread: the peer
(``_rechub_sequence_peer.py --model sasrec``, its training loop timed alone), then recstack's
``configs/ml100k_sasrec.yaml`` once per variant (loss x precision), every run ``--epochs``
epochs without early stopping. Rates are positions (next-item targets) per second: the peer's
``samples_per_s``, recstack's ``step_samples_per_second`` (training steps without validation
or set-up) times the training set's positions per row. The table gives every round's rate and
recstack / peer within the same round, then the medians.

    PYTHONPATH=/tmp/mt/peers OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequence_training_rate.py \\
        --rounds 2 --epochs 3 --losses full_softmax sampled_bce --precisions no bf16

torch-rechub is not a recstack dependency (``pip install --no-deps --target /tmp/mt/peers
torch-rechub==0.9.0``); ``--no-peer`` times recstack alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "ml100k_sequences"
CONFIG = ROOT / "configs" / "ml100k_sasrec.yaml"


def positions_per_row(data: Path) -> float:
    """Next-item targets per training row (the peer counts positions, recstack rows)."""
    table = pq.read_table(data / "train.parquet", columns=["target_item_ids"])
    return pc.sum(pc.list_value_length(table.column("target_item_ids"))).as_py() / table.num_rows


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def peer_rate(data: Path, epochs: int, out: Path) -> float:
    _run([sys.executable, str(ROOT / "benchmarks" / "_rechub_sequence_peer.py"), "--data", str(data), "--model", "sasrec",
          "--epochs", str(epochs), "--out", str(out)])  # fmt: skip
    return float(json.loads((out / "stats.json").read_text())["samples_per_s"])


def recstack_rate(data: Path, epochs: int, loss: str, precision: str, out: Path, per_row: float) -> float:
    _run([sys.executable, "-m", "recstack.cli", "train", str(CONFIG), "--overwrite", "--set", f"output={out}",
                    "--set", f"data.dir={data}", "--set", f"trainer.epochs={epochs}", "--set", "trainer.patience=null",
                    "--set", f"task.loss={loss}", "--set", "threads=1", *(["--set", f"trainer.mixed_precision={precision}"] if precision != "no" else [])])  # fmt: skip
    return float(json.loads((out / "metrics.json").read_text())["step_samples_per_second"]) * per_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--losses", nargs="+", default=["full_softmax", "sampled_bce"])
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=("no", "bf16"))
    parser.add_argument("--no-peer", action="store_true", help="time recstack alone")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not (args.data / "train.parquet").exists():  # a fresh checkout: build the split first
        subprocess.run([sys.executable, "-m", "recstack.cli", "datasets", "movielens-sequences", "--out", str(args.data)], cwd=ROOT, check=True)
    per_row = positions_per_row(args.data)
    variants = [(loss, precision) for loss in args.losses for precision in args.precisions]
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            peer = None if args.no_peer else peer_rate(args.data, args.epochs, Path(scratch) / f"peer{round_index}")
            if peer is not None:
                rates.setdefault("torch-rechub SASRec (BPR, 1 negative)", []).append(peer)
            for loss, precision in variants:
                name = f"recstack SASRec, {loss}, {'fp32' if precision == 'no' else precision}"
                rate = recstack_rate(args.data, args.epochs, loss, precision, Path(scratch) / f"run{round_index}", per_row)
                rates.setdefault(name, []).append(rate)
                if peer is not None:
                    ratios.setdefault(name, []).append(rate / peer)
            print(f"round {round_index + 1}: " + ", ".join(f"{name}: {values[-1]:,.0f}" for name, values in rates.items()), flush=True)
    print(f"\n{args.epochs} epochs a run, {args.rounds} rounds, positions/s (rows x {per_row:.2f}):\n")
    print("| | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median | / torch-rechub, per round |")
    print("|---|" + "---:|" * (args.rounds + 2))
    for name, values in rates.items():
        ratio = " / ".join(f"{value:.2f}" for value in ratios.get(name, [])) or "-"
        print(f"| {name} | " + " | ".join(f"{value:,.0f}" for value in values) + f" | {statistics.median(values):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
