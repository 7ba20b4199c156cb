"""The CPU training kernels recstack replaces or tunes, each against torch's default, one thread.

1. Embedding lookups: ``nn.Embedding`` table by table (torch's ``embedding_dense_backward``)
   vs ``recstack.nn.Embedding`` (``zeros + index_add_`` backward), forward + backward; for
   the 7 MovieLens id fields, torch's lookups stacked into ``(B, F, D)`` fields vs
   ``recstack.nn.FieldLookup`` (one node, one ``index_add_`` for all tables).
2. Batch gather: ``tensor[index]`` vs ``tensor.index_select(0, index)`` for a shuffled batch.
3. Heap: DIN's Dice (40,000 x 80 activations) forward + backward with glibc's default
   thresholds vs after ``keep_freed_memory()`` (each in its own process: the setting is global).
4. Fused training nodes, forward + backward, the layers' own autograd ops vs recstack's node:
   the ReLU MLP with its logit head (``MLP.score``: ``relu_mlp``), DCN's cross network, the FM
   interaction, and an Adam step over a DeepFM's 21 parameters (torch's fused Adam vs
   ``FusedAdam``). These run last, after ``keep_freed_memory()``, as the Trainer runs them.
5. Weighted sums over a small axis, forward + backward: ``einsum`` (B tiny matmuls on CPU) vs
   the multiply-and-sum recstack uses: SASRec's one-negative logits, the negative-sampling
   loss's per-row negatives, DIN's attention pooling (padded path), DCN-v2's expert mixture.
6. SASRec's transformer in training, forward + backward: the padded encoding at its real
   positions (``forward(x, mask)[mask]``) vs ``encode_packed`` (the per-position work on the P
   real positions only), 2 blocks, D 64, dropout 0.2, B 128 rows of at most 50 items shaped as
   the MovieLens-100K sequences (61 % full rows, the rest 1-49 items: 19 % padding).

Medians of interleaved repeats (the heap rows: of interleaved processes).

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


def interleaved(fns: dict, repeats: int = 9, number: int = 50) -> dict[str, float]:
    """Median milliseconds per call of each fn, their repeats interleaved (shared machine)."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - started) / number * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def embedding_rows() -> list[str]:
    """One table, and the 7 id tables of the MovieLens CTR benchmark (sizes as fitted, ids
    skewed as there: a 2-value and a 7-value field): torch table by table vs recstack."""
    from recstack.nn import Embedding, FieldLookup

    cases = {
        "1 table, 1,000 rows, 1,024 ids": ([1_000], [torch.randint(1, 1_000, (1024,))]),
        "1 table, 100,000 rows, 1,024 ids": ([100_000], [torch.randint(1, 100_000, (1024,))]),
        "1 history table, 1,700 rows, 1,024 x 50 ids": ([1_700], [torch.randint(0, 1_700, (1024, 50))]),
    }
    sizes = [945, 1684, 4, 9, 23, 800, 20]
    ids = [torch.randint(1, size, (1024,)) for size in sizes]
    ids[2], ids[3] = torch.randint(2, 4, (1024,)), torch.randint(2, 9, (1024,))
    cases["7 MovieLens id fields as (B, 7, 16), 1,024 ids each"] = (sizes, ids)
    rows = []
    for label, (sizes, ids) in cases.items():
        torch_tables = [torch.nn.Embedding(size, 16, padding_idx=0) for size in sizes]
        our_tables = [Embedding(size, 16, padding_idx=0) for size in sizes]
        fields = FieldLookup(our_tables)
        grad = torch.randn(*ids[0].shape, len(ids), 16) if len(ids) > 1 else torch.randn(*ids[0].shape, 16)

        def step(output, tables):
            output.backward(grad)
            for table in tables:
                table.weight.grad = None

        if len(ids) > 1:  # a ranking model's fields, (B, F, D)
            ours = lambda: step(fields(ids), our_tables)  # noqa: E731
            theirs = lambda: step(torch.stack([t(i) for t, i in zip(torch_tables, ids)], dim=1), torch_tables)  # noqa: E731
        else:
            ours = lambda: step(our_tables[0](ids[0]), our_tables)  # noqa: E731
            theirs = lambda: step(torch_tables[0](ids[0]), torch_tables)  # noqa: E731
        times = interleaved({"torch": theirs, "recstack": ours})
        rows.append(f"| embedding fwd+bwd: {label} | {times['torch']:.3f} | {times['recstack']:.3f} | {times['torch'] / times['recstack']:.2f}x |")
    return rows


def gather_rows() -> list[str]:
    rows = []
    for shape in ((80_000,), (80_000, 50)):
        values = torch.randint(0, 1000, shape)
        index = torch.randperm(shape[0])[:1024]
        times = interleaved({"indexing": lambda: values[index], "index_select": lambda: values.index_select(0, index)})
        indexing, selecting = times["indexing"], times["index_select"]
        rows.append(f"| batch gather of 1,024 rows from {shape} | {indexing:.3f} | {selecting:.3f} | {indexing / selecting:.2f}x |")
    return rows


def weighted_sum_rows() -> list[str]:
    rows = []
    cases = [  # label, einsum equation, left shape, right shape, the same sum as multiply-and-sum
        ("SASRec one-negative logits, N 5,158, K 1, D 64", "nd,nkd->nk", (5158, 64), (5158, 1, 64), lambda a, b: (a.unsqueeze(1) * b).sum(-1)),
        ("negative sampling, N 1,024, K 20, D 64", "nd,nkd->nk", (1024, 64), (1024, 20, 64), lambda a, b: (a.unsqueeze(1) * b).sum(-1)),
        ("DIN attention pooling, B 1,024, L 50, D 32", "bl,bld->bd", (1024, 50), (1024, 50, 32), lambda a, b: (a.unsqueeze(-1) * b).sum(1)),
        ("DCN-v2 expert mixture, B 1,024, K 4, D 64", "bk,bkd->bd", (1024, 4), (1024, 4, 64), lambda a, b: (a.unsqueeze(-1) * b).sum(1)),
    ]  # fmt: skip
    for label, equation, left_shape, right_shape, summed in cases:
        a, b = torch.randn(left_shape, requires_grad=True), torch.randn(right_shape, requires_grad=True)
        times = interleaved({
            "torch": lambda: torch.einsum(equation, a, b).sum().backward(),
            "recstack": lambda: summed(a, b).sum().backward(),
        }, number=20)  # fmt: skip
        rows.append(f"| weighted sum fwd+bwd: {label} | {times['torch']:.3f} | {times['recstack']:.3f} | {times['torch'] / times['recstack']:.2f}x |")
    return rows


def packed_encoder_rows() -> list[str]:
    from recstack.nn.sequence import CausalSelfAttentionEncoder, recency_positions

    torch.manual_seed(0)
    encoder = CausalSelfAttentionEncoder(64, num_layers=2, max_len=50, dropout=0.2).train()
    full = torch.rand(128) < 0.615  # MovieLens-100K's training rows: 61.5 % hold 50 items
    lengths = torch.where(full, torch.tensor(50), torch.randint(1, 50, (128,)))
    mask = torch.arange(50).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L) left-aligned
    positions = recency_positions(mask)
    x = torch.randn(128, 50, 64, requires_grad=True)
    rows = x.detach()[mask].requires_grad_()
    times = interleaved({
        "torch": lambda: encoder(x, mask, positions)[mask].sum().backward(),
        "recstack": lambda: encoder.encode_packed(rows, mask, positions).sum().backward(),
    }, repeats=7, number=5)  # fmt: skip
    padding = 1 - float(mask.float().mean())
    label = f"SASRec encoder fwd+bwd, padded vs packed (B 128, L 50, {padding:.0%} padding)"
    return [f"| {label} | {times['torch']:.3f} | {times['recstack']:.3f} | {times['torch'] / times['recstack']:.2f}x |"]


def heap_rows() -> list[str]:
    results: dict[str, list[float]] = {"default": [], "keep": []}
    for _ in range(3):  # interleaved processes
        for mode in results:
            out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True)
            results[mode].append(float(out.stdout.strip().splitlines()[-1]))
    default, keep = statistics.median(results["default"]), statistics.median(results["keep"])
    return [f"| Dice 40,000 x 80 fwd+bwd, default heap vs keep_freed_memory | {default:.2f} | {keep:.2f} | {default / keep:.2f}x |"]


def fused_rows() -> list[str]:
    """Autograd over the modules' own ops vs the fused training nodes, on MovieLens shapes."""
    from recstack.nn import MLP, CrossNetwork, FactorizationMachine
    from recstack.training.allocator import keep_freed_memory
    from recstack.training.fused_adam import FusedAdam

    keep_freed_memory()
    torch.manual_seed(0)
    mlp = MLP(in_dim=112, hidden_dims=(256, 128), head_dim=1)  # the MLP owns its logit layer
    head = mlp.head
    x = torch.randn(1024, 112, requires_grad=True)

    def layers(v):
        for layer in mlp.layers:
            v = torch.relu(layer.linear(v))
        return head(v)

    cross = CrossNetwork(in_dim=112, num_layers=3)

    def cross_layers(x0):
        v = x0
        for w, b in zip(cross.weight, cross.bias):
            v = x0 * (v @ w.unsqueeze(1)) + b + v
        return v

    fields = torch.randn(1024, 7, 16, requires_grad=True)
    fm = FactorizationMachine()

    def fm_formula(v):
        summed = v.sum(dim=1)
        return 0.5 * ((summed * summed).sum(dim=1) - (v * v).sum(dim=(1, 2)))

    def backward(fn, bf16: bool = False):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = fn()
            out.float().sum().backward()
        return run

    cases = {
        "ReLU MLP 112-256-128-1, 1,024 rows, fp32": (backward(lambda: layers(x)), backward(lambda: mlp(x))),
        "ReLU MLP 112-256-128-1, 1,024 rows, bf16 autocast": (
            backward(lambda: layers(x), True), backward(lambda: mlp(x), True)),
        "DCN cross network, 3 layers, 1,024 x 112, bf16 autocast": (
            backward(lambda: cross_layers(x), True), backward(lambda: cross(x), True)),
        "FM interaction, 1,024 x 7 fields x 16": (backward(lambda: fm_formula(fields)), backward(lambda: fm(fields))),
    }
    shapes = [(945, 16), (1684, 16), (4, 16), (9, 16), (23, 16), (800, 16), (20, 16)]
    shapes += [(rows, 1) for rows, _ in shapes] + [(256, 112), (256,), (128, 256), (128,), (1, 128), (1,), (1,)]
    optimizers = {}
    for name, kind in (("torch", torch.optim.Adam), ("recstack", FusedAdam)):
        params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
        for p in params:
            p.grad = torch.randn(p.shape)
        optimizers[name] = kind(params, lr=1e-3, fused=True)
    cases["Adam step, a DeepFM's 21 parameters (fused kernel both)"] = (optimizers["torch"].step, optimizers["recstack"].step)
    rows = []
    for label, (reference, ours) in cases.items():
        times = interleaved({"torch": reference, "recstack": ours})
        rows.append(f"| {label} | {times['torch']:.3f} | {times['recstack']:.3f} | {times['torch'] / times['recstack']:.2f}x |")
    return rows


def main() -> None:
    torch.set_num_threads(1)
    print("| kernel | torch default, ms | recstack, ms | speed-up |")
    print("|---|---|---|---|")
    for row in embedding_rows() + gather_rows() + weighted_sum_rows() + heap_rows() + fused_rows() + packed_encoder_rows():
        print(row)


if __name__ == "__main__":
    main()
