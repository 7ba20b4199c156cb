"""The CPU training kernels recstack replaces or tunes, each against torch's default, one thread.

1. Embedding backward: ``nn.Embedding`` (torch's ``embedding_dense_backward``) vs
   ``recstack.nn.Embedding`` (``zeros + index_add_``), forward + backward of one lookup.
2. Batch gather: ``tensor[index]`` vs ``tensor.index_select(0, index)`` for a shuffled batch.
3. Heap: DIN's Dice (40,000 x 80 activations) forward + backward with glibc's default
   thresholds vs after ``keep_freed_memory()`` (each in its own process: the setting is global).

Medians of 5 repeats, interleaved where they share a process.

    .venv/bin/python benchmarks/cpu_kernels.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch

HEAP_PROBE = """
import statistics, sys, time, torch
torch.set_num_threads(1)
from recstack.nn.dice import Dice
from recstack.training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
x = torch.randn(40000, 80, requires_grad=True)
grad = torch.randn(40000, 80)
dice = Dice(num_features=80)
def step():
    dice(x).backward(grad)
for _ in range(3):
    step()
times = []
for _ in range(5):
    started = time.perf_counter()
    for _ in range(10):
        step()
    times.append((time.perf_counter() - started) / 10 * 1e3)
print(statistics.median(times))
"""


def timed(fn, repeats: int = 5, number: int = 100) -> float:
    """Median milliseconds per call."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - started) / number * 1e3)
    return statistics.median(times)


def embedding_rows() -> list[str]:
    from recstack.nn import Embedding

    rows = []
    for num_rows, ids_shape in ((1_000, (1024,)), (100_000, (1024,)), (1_700, (1024, 50))):
        ids = torch.randint(0, num_rows, ids_shape)
        grad = torch.randn(*ids_shape, 16)
        times = {}
        for name, table in (("nn.Embedding", torch.nn.Embedding(num_rows, 16, padding_idx=0)),
                            ("recstack.nn.Embedding", Embedding(num_rows, 16, padding_idx=0))):
            def step(table=table):
                table(ids).backward(grad)
                table.weight.grad = None
            times[name] = timed(step, number=20 if len(ids_shape) > 1 else 100)
        torch_ms, ours_ms = times["nn.Embedding"], times["recstack.nn.Embedding"]
        rows.append(f"| embedding fwd+bwd, {num_rows:,} rows, ids {ids_shape} | {torch_ms:.3f} | {ours_ms:.3f} | {torch_ms / ours_ms:.2f}x |")
    return rows


def gather_rows() -> list[str]:
    rows = []
    for shape in ((80_000,), (80_000, 50)):
        values = torch.randint(0, 1000, shape)
        index = torch.randperm(shape[0])[:1024]
        indexing = timed(lambda: values[index])
        selecting = timed(lambda: values.index_select(0, index))
        rows.append(f"| batch gather of 1,024 rows from {shape} | {indexing:.3f} | {selecting:.3f} | {indexing / selecting:.2f}x |")
    return rows


def heap_rows() -> list[str]:
    results: dict[str, list[float]] = {"default": [], "keep": []}
    for _ in range(3):  # interleaved processes
        for mode in results:
            out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True)
            results[mode].append(float(out.stdout.strip().splitlines()[-1]))
    default, keep = statistics.median(results["default"]), statistics.median(results["keep"])
    return [f"| Dice 40,000 x 80 fwd+bwd, default heap vs keep_freed_memory | {default:.2f} | {keep:.2f} | {default / keep:.2f}x |"]


def main() -> None:
    torch.set_num_threads(1)
    print("| kernel | torch default, ms | recstack, ms | speed-up |")
    print("|---|---|---|---|")
    for row in embedding_rows() + gather_rows() + heap_rows():
        print(row)


if __name__ == "__main__":
    main()
