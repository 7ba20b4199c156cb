"""How much of a ranking model's CPU training step is arithmetic, and how much is fixed cost.

One training step (forward, backward, optimizer) of a MovieLens-100K CTR model, timed on a
batch of 1,024 rows and on the first 8 rows of the same batch, one torch thread, the
Trainer's optimizer and heap setting. On 8 rows the arithmetic is negligible, so that step is
the fixed cost of the framework (operator dispatch, the autograd engine, oneDNN's per-call
set-up, the optimizer over every parameter). Then the MLP's fp32 matmuls, each timed alone:
the arithmetic floor of the step. Together, the floor no model change removes.

    .venv/bin/python benchmarks/step_floor.py --models wide_deep deepfm dcn --precisions no bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ranking import recstack_setup


def step_ms(model, task, batch, precision: str, optimizer, repeats: int) -> dict[str, float]:
    from recstack.training.config import MixedPrecision
    from recstack.training.device import autocast

    mode = MixedPrecision.BF16 if precision == "bf16" else MixedPrecision.NO
    device = torch.device("cpu")

    def one() -> tuple[float, float, float]:
        started = time.perf_counter()
        with autocast(mode, device):
            loss = task.loss(model, batch)
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        return forward - started, backward - forward, done - backward

    for _ in range(20):
        one()
    parts = list(zip(*(one() for _ in range(repeats))))
    forward, backward, update = (statistics.median(p) * 1e3 for p in parts)
    return {"forward": forward, "backward": backward, "optimizer": update, "step": forward + backward + update}


def matmul_floor(batch: int, widths: tuple[int, ...], repeats: int) -> None:
    """The fp32 matmuls of an MLP's forward and backward (input grad and weight grad per layer)
    on ``batch`` rows, each timed alone, beside a large product at this core's peak: the part
    of a step no framework change removes."""

    def median_ms(a: torch.Tensor, b: torch.Tensor, count: int) -> float:
        for _ in range(10):
            a @ b
        times = []
        for _ in range(count):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3

    big = torch.randn(2048, 2048)
    peak = 2 * 2048**3 / median_ms(big, big, 10) / 1e6
    print(f"\nfp32 matmul peak, 2,048^3: {peak:.0f} GFLOPS\n")
    print("| matmul | m x k x n | ms | GFLOPS |")
    print("|---|---|---|---|")
    total = 0.0
    for fan_in, fan_out in zip(widths, widths[1:]):
        for label, (m, k, n) in (
            (f"forward {fan_in}->{fan_out}", (batch, fan_in, fan_out)),
            (f"input grad {fan_out}->{fan_in}", (batch, fan_out, fan_in)),
            (f"weight grad {fan_in}x{fan_out}", (fan_out, batch, fan_in)),
        ):
            ms = median_ms(torch.randn(m, k), torch.randn(k, n), repeats)
            total += ms
            print(f"| {label} | {m} x {k} x {n} | {ms:.3f} | {2 * m * k * n / ms / 1e6:.0f} |")
    print(f"| all | | {total:.2f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wide_deep", "deepfm", "dcn"])
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from recstack.training import TrainerConfig
    from recstack.training.allocator import keep_freed_memory
    from recstack.training.optim import build_optimizers

    keep_freed_memory()
    print("| model | precision | rows | forward ms | backward ms | optimizer ms | step ms |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        setup = recstack_setup(name, "ids", 0, "model")
        model, task = setup["model"], setup["task"]
        model.train()
        batch = next(iter(setup["train_batches"](0)))
        for precision in args.precisions:
            optimizer = build_optimizers(model, TrainerConfig(lr=1e-3))[0]
            for rows in (len(batch), 8):
                times = step_ms(model, task, batch.select(slice(0, rows)), precision, optimizer, args.repeats)
                print(f"| {name} | {'fp32' if precision == 'no' else precision} | {rows} | {times['forward']:.2f} | "
                      f"{times['backward']:.2f} | {times['optimizer']:.2f} | {times['step']:.2f} |")
    # the MovieLens models' MLP: 7 id fields x 16 -> 256 -> 128 (the 128->1 head is negligible)
    matmul_floor(1024, (112, 256, 128), args.repeats)


if __name__ == "__main__":
    main()
