"""Training on CUDA: eager vs ``trainer.compile`` (inductor's default mode) vs
``mode="reduce-overhead"`` (CUDA graphs), MovieLens-100K CTR, the ranking benchmark's setup.

Each (model, variant) runs in its own process (the variant patches ``torch.compile``); the
figure is the median samples/s of epochs 2-5, the first epoch (compilation) apart.

    PYTHONPATH=src python3 benchmarks/gpu_compile.py --models wide_deep deepfm dcn din
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("eager", "default", "reduce-overhead")


def worker(name: str, variant: str, precision: str, epochs: int) -> None:
    import torch

    from ranking import recstack_setup, recstack_trainer

    torch.set_num_threads(1)
    if variant == "reduce-overhead":
        torch.compile = functools.partial(torch.compile, mode="reduce-overhead")
    setup = recstack_setup(name, "ids", 0, "model")
    times = []
    for _ in range(epochs):
        trainer = recstack_trainer(name, 0, 1, precision, compile=variant != "eager", device="cuda")
        started = time.perf_counter()
        state = trainer.fit(setup["model"], setup["task"], setup["train_batches"])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    rows = state.samples_seen
    print(f"| {name} | {variant} | {precision} | {rows / statistics.median(times[1:]):.0f} | {times[0]:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wide_deep", "deepfm", "dcn", "din"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per (model, variant)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.precision, args.epochs)
        return
    print("| model | variant | precision | train samples/s (median of epochs 2-5) | first epoch s |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for variant in args.variants:
            command = [sys.executable, __file__, "--precision", args.precision, "--epochs", str(args.epochs), "--worker", name, variant]
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, cwd=Path(__file__).parent)
                lines = [line for line in out.stdout.splitlines() if line.startswith("| ")]
                print(lines[-1] if lines else f"| {name} | {variant} | failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
            except subprocess.TimeoutExpired:
                print(f"| {name} | {variant} | over {args.timeout} s |", flush=True)


if __name__ == "__main__":
    main()
