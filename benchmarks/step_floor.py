"""How much of a ranking model's CPU training step is arithmetic, and how much is fixed cost.

One training step (forward, backward, optimizer) of a MovieLens-100K CTR model, timed on a
batch of 1,024 rows and on the first 8 rows of the same batch, one torch thread, the
Trainer's optimizer and heap setting. On 8 rows the arithmetic is negligible, so that step is
the fixed cost of the framework (operator dispatch, the autograd engine, oneDNN's per-call
set-up, the optimizer over every parameter): the floor no model change removes.

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


if __name__ == "__main__":
    main()
