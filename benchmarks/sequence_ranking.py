"""recstack's sequence rankers side by side on the MovieLens-100K CTR task (time split): DIN, BST, DIEN.

Same features for all three (the id features of ``benchmarks/ranking.py`` plus the item and
genre histories, maxlen 50, attended or encoded as one group), embedding 16, MLP 256-128 ReLU,
batch 1024, Adam lr 1e-3, fixed epochs, one thread. Each (model, seed) run is its own
subprocess (peak RSS per run); seeds are interleaved so each seed's rows share the machine's
load. "train samples/s" times the training steps of ``Trainer.fit`` (the batches are transformed
and cached first; the validation and test passes at each epoch's end are left out); the DIEN
figure includes its auxiliary loss. The first table is each run's last epoch; with more than one
epoch a second table gives each run's test figures at its epoch of best validation AUC, for the
peers as for recstack (early stopping's choice, made the same way for every library). ``bst`` is the paper's
flattened output, ``bst_target`` the same model reading the target slot only (``output: target``).

``--peers DIR`` (a folder holding DeepCTR-Torch 0.3.0 and torch-rechub 0.9.0, installed
``--no-deps --target``) adds the peers' rows, interleaved with recstack's in each seed, each its
own subprocess of ``benchmarks/_peer_sequence_rankers.py`` with ``PYTHONPATH=DIR`` on the same data
and features: DeepCTR-Torch's DIEN (AUGRU, auxiliary loss) and torch-rechub's BST and DIEN. It also
prints recstack's samples/s over each peer's, per seed (the two ran back to back), as medians.

    .venv/bin/python benchmarks/sequence_ranking.py --seeds 0 1 2 --epochs 1
    .venv/bin/python benchmarks/sequence_ranking.py --models bst_target dien --peers /tmp/mt/peers

Prints a Markdown table: medians over seeds, with the min-max spread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "ml100k_ctr"
SCHEMA = ROOT / "schemas" / "movielens_ctr.yaml"
MODELS = ("din", "bst", "bst_target", "dien", "dien_mlp", "dien_inner")
# bst_target: BST with output: target (the target slot only); dien: as shipped (one GRU over item and genre,
# the auxiliary loss scoring h_t . e_{t+1} against a behaviour of the batch); dien_mlp: the auxiliary loss
# through the released code's MLP against uniform item rows (shipped before 2026-12-07); dien_inner: laid
# out as torch-rechub's (one GRU per history feature, h_t . e_{t+1} against uniform item rows)
ID_FEATURES = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
PEERS = ("deepctr_dien", "rechub_bst", "rechub_bst_ffn32", "rechub_dien")  # see benchmarks/_peer_sequence_rankers.py
PAIRS = {  # peer -> recstack's models compared with it
    "deepctr_dien": ("dien", "dien_mlp", "dien_inner"), "rechub_dien": ("dien", "dien_mlp", "dien_inner"),
    "rechub_bst": ("bst_target",), "rechub_bst_ffn32": ("bst_target",),
}
BEHAVIOURS = [{"candidate": "item_id", "history": "hist_item_ids"}, {"candidate": "genre", "history": "hist_genres"}]


def model_params(name: str, aux_loss_weight: float = 0.2) -> dict:
    params: dict = {"features": ID_FEATURES, "behaviours": BEHAVIOURS, "hidden_dims": [256, 128], "activation": "relu"}
    if name == "din":
        params["attention_hidden_dims"] = [80, 40]
    if name in ("bst", "bst_target"):
        params.update(num_layers=1, num_heads=2, transformer_dropout=0.2, output="target" if name == "bst_target" else "concat")
    if name == "dien":
        params.update(aux_loss_weight=aux_loss_weight, aux_scorer="inner_product", aux_negatives="behaviours")
    if name == "dien_mlp":
        params.update(aux_loss_weight=aux_loss_weight, aux_scorer="mlp", aux_negatives="uniform", aux_hidden_dims=[100, 50])
    if name == "dien_inner":
        params.update(aux_loss_weight=aux_loss_weight, aux_scorer="inner_product", aux_negatives="uniform",
                      behaviours=[{**behaviour, "group": behaviour["history"]} for behaviour in BEHAVIOURS])
    return params


def run(name: str, seed: int, epochs: int, aux_loss_weight: float = 0.2, overrides: dict | None = None, precision: str = "no") -> dict:
    """One training run in this process: test AUC / logloss, train samples/s, peak RSS."""
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

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, fused=True)  # the one-time import, untimed
    train = DataSource(paths=(str(DATA_DIR / "train.parquet"),))
    preprocessor = Preprocessor(Schema.from_yaml(SCHEMA)).fit(train)
    torch.manual_seed(seed)
    model = build_model(name.split("_")[0], preprocessor.feature_map(), {**model_params(name, aux_loss_weight), **(overrides or {})})
    task = BinaryClassificationTask()
    stream = BatchStream(
        source=train, preprocessor=preprocessor,
        config=LoaderConfig(batch_size=1024, shuffle_buffer=100_000, seed=seed, cache=True),
    )
    for _ in stream:  # transform and cache before the timer
        pass

    def batches(epoch: int):
        stream.set_epoch(epoch)
        return stream

    valid, test = (DataSource(paths=(str(DATA_DIR / f"{split}.parquet"),)) for split in ("valid", "test"))
    tested: list[dict] = []  # each epoch's test figures

    def evaluate(model) -> dict[str, float]:  # at each epoch's end; its time is left out of the rate
        tested.append(evaluate_source(model, task, preprocessor, test, progress=False))
        return evaluate_source(model, task, preprocessor, valid, progress=False)

    trainer = Trainer(TrainerConfig.from_dict(
        {"epochs": epochs, "lr": 1e-3, "seed": seed, "log_every_steps": 10_000, "progress": False, "monitor": "auc", "patience": None,
         "mixed_precision": precision}
    ))
    state = trainer.fit(model, task, batches, evaluate)
    figures = lambda metrics: {"auc": metrics["auc"], "gauc": metrics.get("gauc"), "logloss": metrics["logloss"]}  # noqa: E731
    return {
        **figures(tested[-1]),
        "selected": {**figures(tested[state.best_epoch]), "epoch": state.best_epoch + 1},  # best_epoch counts from 0
        "samples_per_second": state.samples_seen / (state.train_seconds - state.evaluation_seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def summarise(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--peers", type=Path, default=None, help="a folder holding deepctr_torch / torch_rechub: add the peers' rows")
    parser.add_argument("--peer-models", nargs="+", default=["deepctr_dien", "rechub_bst_ffn32", "rechub_dien"], choices=PEERS)
    parser.add_argument("--aux-loss-weight", type=float, default=0.2, help="DIEN's alpha, for recstack's and the peers' DIEN alike")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a model param for recstack's models (YAML value), e.g. batch_norm=true (torch-rechub's MLP has batch norm)")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"],
                        help="recstack's runs: trainer.mixed_precision (bf16 needs a CPU with native bfloat16; the peers run fp32)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.param)}
        print(json.dumps(run(args.worker[0], int(args.worker[1]), args.epochs, args.aux_loss_weight, overrides, args.mixed_precision)))
        return
    if not (DATA_DIR / "train.parquet").exists():
        from recstack.datasets.movielens import build_ctr

        build_ctr(DATA_DIR)
    peers = args.peer_models if args.peers is not None else []
    runs: dict[str, list[dict]] = {name: [] for name in [*args.models, *peers]}
    load_before = os.getloadavg()
    for seed in args.seeds:  # interleaved: each seed's runs share the machine's load
        for name in runs:
            if name in peers:
                script = str(Path(__file__).with_name("_peer_sequence_rankers.py"))
                command = [sys.executable, script, str(DATA_DIR), name, str(seed), str(args.epochs), str(args.aux_loss_weight)]
                env = {**os.environ, "PYTHONPATH": str(args.peers), "OMP_NUM_THREADS": "1"}
            else:
                command = [sys.executable, __file__, "--worker", name, str(seed), "--epochs", str(args.epochs),
                           "--aux-loss-weight", str(args.aux_loss_weight), "--mixed-precision", args.mixed_precision,
                           *(f"--param={item}" for item in args.param)]
                env = None
            out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
            if out.returncode != 0:
                raise SystemExit(f"{name} seed {seed} failed:\n{out.stderr[-2000:]}")
            runs[name].append(json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1]))
            print(f"# {name} seed {seed}: {runs[name][-1]}", file=sys.stderr, flush=True)
    print(f"| model | test AUC | test GAUC | test logloss | train samples/s | peak RSS MiB |  ({len(args.seeds)} seeds, {args.epochs} epoch(s), medians (min-max))")
    print("|---|---|---|---|---|---|")
    for name, results in runs.items():
        column = lambda key: [r[key] for r in results]  # noqa: E731
        print(
            f"| {name} | {summarise(column('auc'), 4)} | {summarise(column('gauc'), 4)} | {summarise(column('logloss'), 4)} "
            f"| {summarise(column('samples_per_second'), 0)} | {summarise(column('peak_rss_mib'), 0)} |"
        )
    if args.epochs > 1:
        print("\nAt each run's epoch of best validation AUC (every library selected by the same rule):\n")
        print("| model | test AUC | test GAUC | test logloss | epochs kept |")
        print("|---|---|---|---|---|")
        for name, results in runs.items():
            column = lambda key: [r["selected"][key] for r in results]  # noqa: E731
            print(f"| {name} | {summarise(column('auc'), 4)} | {summarise(column('gauc'), 4)} | {summarise(column('logloss'), 4)} "
                  f"| {' '.join(str(e) for e in column('epoch'))} |")
    for peer in peers:
        for ours in (name for name in PAIRS[peer] if name in runs):
            ratios = [a["samples_per_second"] / b["samples_per_second"] for a, b in zip(runs[ours], runs[peer])]
            print(f"\n{ours} / {peer} train samples/s, per seed: {summarise(ratios, 2)}", end="")
    print(f"\n\nload average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
