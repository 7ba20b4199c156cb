"""recstack vs DeepCTR-Torch on the MovieLens-100K CTR task (time split), side by side.

Every (library, model, seed) run is its own subprocess, so peak RSS is measured per run; the
peer runs ``benchmarks/_deepctr_peer.py`` with a separate venv's python (DeepCTR-Torch is not a
recstack dependency). Same split, embedding 16, MLP 256-128, batch 1024, Adam lr 1e-3, fixed
epochs, one thread. recstack runs twice: on the peer's id-only features, and on every schema
feature (the aggregate rates included); plus an LR on the two positive rates alone.

Both sides time preparation (vocabularies + converting the training rows) apart from training:
"train samples/s" is the training call alone (the peer's includes its array -> tensor step),
"samples/s with prep" divides by both. recstack converts only the features the model reads, as
the peer does (``--baseline`` adds rows that convert every schema feature, the old behaviour).
Runs are interleaved seed by seed, so each seed's rows share the machine's load.

    .venv/bin/python benchmarks/ranking.py --peer-python /work/bench-venv/bin/python \\
        --seeds 0 1 2 --epochs 1

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


def read_features(name: str, features: str) -> list[str] | None:
    """The schema features the model reads (None: every one), histories included."""
    if name == "lr":
        return list(RATE_FEATURES)
    if features == "all":
        return None
    return list(ID_FEATURES) + (list(HISTORIES) if name == "din" else [])


def run_recstack(
    name: str, features: str, seed: int, epochs: int, transform: str, precision: str = "no", device: str = "cpu"
) -> dict:
    """One training run in this process; returns test metrics, samples/s and peak RSS.

    ``prep_seconds`` times what the peer's does: fitting the vocabularies and one pass that
    transforms (and caches) every training batch; ``trainer.fit`` is timed apart. The
    vocabularies are fitted on every schema feature whatever the model reads (so both
    ``transform`` modes see the same ids); ``transform="model"`` then converts only the
    features the model reads, as the peer does, ``"schema"`` all of them.
    """
    import torch

    torch.set_num_threads(1)
    from recstack.data.sources import DataSource
    from recstack.workflows.tasks import evaluate_source

    setup = recstack_setup(name, features, seed, transform)
    model, task, preprocessor, prep_seconds = (setup[k] for k in ("model", "task", "preprocessor", "prep_seconds"))
    # the trainer is built before the timer, as the peer's model.compile() is (and as the
    # Criteo worker below does): the timer covers fit() alone on both sides
    trainer = recstack_trainer(name, seed, epochs, precision, device=device)
    started = time.perf_counter()
    state = trainer.fit(model, task, setup["train_batches"])
    seconds = time.perf_counter() - started
    metrics = evaluate_source(model, task, preprocessor, DataSource(paths=(str(DATA_DIR / "test.parquet"),)))
    return run_result(metrics, state.samples_seen, seconds, prep_seconds)


def run_result(metrics: dict, samples: int, seconds: float, prep_seconds: float) -> dict:
    """The result line of one recstack run (the same keys as the peer's)."""
    return {
        "auc": metrics["auc"],
        "logloss": metrics["logloss"],
        "samples_per_second": samples / seconds,
        "samples_per_second_with_prep": samples / (seconds + prep_seconds),
        "prep_seconds": prep_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def recstack_setup(name: str, features: str, seed: int, transform: str) -> dict:
    """Model, task, preprocessor and cached training batches; ``prep_seconds`` times the
    vocabularies and the first (transforming, caching) pass over the training file."""
    import torch

    from recstack.data.loader import BatchStream, LoaderConfig
    from recstack.data.preprocessor import Preprocessor
    from recstack.data.sources import DataSource
    from recstack.models import build_model
    from recstack.schema import Schema
    from recstack.tasks.binary import BinaryClassificationTask

    # The peer builds its optimizer in compile(), before its timer, and with it pays torch's
    # one-time optimizer import (torch._dynamo, ~1 s); recstack's Trainer builds its optimizer
    # inside fit(), so pay that import here, outside both timers, for a like-for-like timing.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, fused=True)
    started = time.perf_counter()
    train = DataSource(paths=(str(DATA_DIR / "train.parquet"),))
    preprocessor = Preprocessor(Schema.from_yaml(SCHEMA)).fit(train)
    read = read_features(name, features)
    if transform == "model" and read is not None:
        preprocessor = _restricted(preprocessor, read)
    # Trainer.fit seeds only after the model exists: seed its initial weights here, as the peer does
    torch.manual_seed(seed)
    model = build_model(name, preprocessor.feature_map(), model_params(name, features))
    stream = BatchStream(
        source=train, preprocessor=preprocessor,
        config=LoaderConfig(batch_size=1024, shuffle_buffer=100_000, seed=seed, cache=True),
    )
    for _ in stream:  # the first pass transforms and caches; fit's epoch 0 gets the same batches
        pass
    prep_seconds = time.perf_counter() - started

    def train_batches(epoch: int):
        stream.set_epoch(epoch)
        return stream

    return {
        "model": model, "task": BinaryClassificationTask(), "preprocessor": preprocessor,
        "train_batches": train_batches, "prep_seconds": prep_seconds,
    }


def recstack_trainer(name: str, seed: int, epochs: int, precision: str = "no", compile: bool = False, device: str = "cpu"):
    from recstack.training import Trainer, TrainerConfig

    # the 3-weight LR on two rates needs a larger step to move from its init in a few epochs
    lr = 0.05 if name == "lr" else 1e-3
    return Trainer(TrainerConfig.from_dict({
        "epochs": epochs, "lr": lr, "seed": seed, "log_every_steps": 10_000, "mixed_precision": precision, "compile": compile, "device": device,
        "progress": False,  # the peer fits with verbose=0
    }))


def speed_main(
    models: list[str], rounds: int, peer_python: str, precisions: list[str], with_compile: bool = False, device: str = "cpu"
) -> None:
    """Steady-state training samples/s of both libraries in one warm process: one epoch of
    each contender per round (the peer, then recstack in each precision, and compiled with
    ``with_compile``), rounds interleaved so machine load hits all alike; medians over rounds,
    the first round (warm-up, and compilation) included; its seconds are printed apart."""
    import torch

    torch.set_num_threads(1)
    printed = subprocess.run(
        [peer_python, "-c", "import deepctr_torch, os; print(os.path.dirname(os.path.dirname(deepctr_torch.__file__)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    site = next(line for line in printed.splitlines() if Path(line).is_dir())  # it also prints a version notice
    sys.path.append(site)  # last: torch, numpy, pandas come from this venv (same versions)
    import _deepctr_peer as peer

    print("| model | library | precision | train samples/s, median (min-max) | x peer (ratio of medians) | x peer, per round: median (min-max) | first epoch s |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        data = peer.prepare(str(DATA_DIR), name)
        peer_model = peer.build(name, data["columns"], 0, device)
        x_train = {n: data["x_train"][n] for n in data["names"]}
        variants = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if with_compile else [])
        keys = {f"{p}+compile" if c else p: (p, c) for p, c in variants}
        setups = {key: recstack_setup(name, "ids", 0, "model") for key in keys}
        speeds: dict[str, list[float]] = {"peer": [], **{key: [] for key in keys}}
        rows = len(data["y_train"])
        for _ in range(rounds):
            for key in speeds:
                started = time.perf_counter()
                if key == "peer":
                    peer_model.fit(x_train, data["y_train"], batch_size=1024, epochs=1, verbose=0, shuffle=True)
                else:
                    setup = setups[key]
                    recstack_trainer(name, 0, 1, *keys[key], device=device).fit(setup["model"], setup["task"], setup["train_batches"])
                speeds[key].append(rows / (time.perf_counter() - started))
        base = statistics.median(speeds["peer"])
        for key, values in speeds.items():
            library, precision = ("DeepCTR-Torch", "fp32") if key == "peer" else ("recstack", key.replace("no", "fp32"))
            speed = statistics.median(values)
            # each round's epochs ran next to each other: their ratio cancels most of the load
            ratios = [mine / theirs for mine, theirs in zip(values, speeds["peer"])]
            print(
                f"| {name} | {library} | {precision} | {speed:.0f} ({min(values):.0f}-{max(values):.0f}) | {speed / base:.2f} "
                f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {rows / values[0]:.1f} |",
                flush=True,
            )


def _restricted(preprocessor, names: list[str]):
    """The fitted preprocessor with only ``names`` in its schema (same vocabularies)."""
    from recstack.data.preprocessor import Preprocessor

    data = preprocessor.to_dict()
    data["schema"] = {**data["schema"], "features": [f for f in data["schema"]["features"] if f["name"] in names]}
    return Preprocessor.from_dict(data)


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


# ---- the synthetic Criteo-like comparison (DeepFM, streamed by recstack) -------------------
CRITEO_TEST_ROWS = 200_000


def criteo_data(rows: int, seed: int = 0) -> Path:
    """``rows`` training rows and ``CRITEO_TEST_ROWS`` test rows of one planted model, as
    ``train.parquet`` / ``test.parquet`` under /tmp (written once)."""
    import pyarrow.parquet as pq

    from recstack.datasets import generate_criteo_like

    folder = Path(f"/tmp/recstack-bench/criteo_{rows}_{seed}")
    if (folder / "test.parquet").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / "whole.parquet"
    generate_criteo_like(whole, rows=rows + CRITEO_TEST_ROWS, seed=seed, chunk_rows=CRITEO_TEST_ROWS)
    file = pq.ParquetFile(whole)
    writers = {split: pq.ParquetWriter(folder / f"{split}.parquet", file.schema_arrow) for split in ("train", "test")}
    seen = 0
    for records in file.iter_batches(batch_size=CRITEO_TEST_ROWS):
        cut = min(max(rows - seen, 0), records.num_rows)  # rows before the cut are training rows
        for split, part in (("train", records.slice(0, cut)), ("test", records.slice(cut))):
            if part.num_rows:
                writers[split].write_batch(part)
        seen += records.num_rows
    for writer in writers.values():
        writer.close()
    whole.unlink()
    return folder


def run_recstack_criteo(folder: Path, seed: int, epochs: int) -> dict:
    """DeepFM on the Criteo-like files, streamed: only the vocabularies and one shuffle buffer
    (100k rows) are held; every batch is transformed inside the training loop."""
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

    features = [{"name": f"I{k}", "kind": "numeric", "transform": "log1p"} for k in range(1, 14)]
    features += [{"name": f"C{j}", "kind": "categorical"} for j in range(1, 27)]
    schema = Schema.from_dict({"label": "label", "embedding_dim": 16, "features": features})
    train, test = (DataSource(paths=(str(folder / f"{s}.parquet"),)) for s in ("train", "test"))
    started = time.perf_counter()
    preprocessor = Preprocessor(schema).fit(train)
    prep_seconds = time.perf_counter() - started
    # 1M-row tables: sparse gradients and SparseAdam touch only a batch's rows
    torch.manual_seed(seed)
    model = build_model("deepfm", preprocessor.feature_map(), {"hidden_dims": [256, 128], "sparse_embeddings": True})
    stream = BatchStream(
        source=train, preprocessor=preprocessor,
        config=LoaderConfig(batch_size=1024, shuffle_buffer=100_000, seed=seed, cache=False),
    )

    def train_batches(epoch: int):
        stream.set_epoch(epoch)
        return stream

    trainer = Trainer(TrainerConfig.from_dict(
        {"epochs": epochs, "lr": 1e-3, "seed": seed, "sparse_embeddings": True, "log_every_steps": 100_000, "progress": False}
    ))
    started = time.perf_counter()
    state = trainer.fit(model, BinaryClassificationTask(), train_batches)
    seconds = time.perf_counter() - started
    metrics = evaluate_source(model, BinaryClassificationTask(), preprocessor, test)
    return run_result(metrics, state.samples_seen, seconds, prep_seconds)


def criteo_main(rows: int, seeds: list[int], epochs: int, peer_python: str) -> None:
    folder = criteo_data(rows)
    runs: dict[str, list[dict]] = {"DeepCTR-Torch": [], "recstack": []}
    for seed in seeds:
        for library in runs:
            if library == "recstack":
                command = [sys.executable, __file__, "--epochs", str(epochs), "--criteo-worker", str(folder), str(seed)]
            else:
                command = [peer_python, str(ROOT / "benchmarks" / "_deepctr_peer.py"), "--criteo", str(folder), str(seed), str(epochs)]
            runs[library].append(subprocess_json(command))
            print(f"# criteo {library} seed {seed}: {runs[library][-1]}", file=sys.stderr, flush=True)
    print(f"| library | model | rows | seeds | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    for library, results in runs.items():
        cells = " | ".join(summarise(results, key, digits) for _, key, digits in COLUMNS)
        print(f"| {library} | deepfm | {rows:,} | {len(results)} | {cells} |")


COLUMNS = (
    ("test AUC", "auc", 4), ("test logloss", "logloss", 4), ("train samples/s", "samples_per_second", 0),
    ("samples/s with prep", "samples_per_second_with_prep", 0), ("prep s", "prep_seconds", 1),
    ("peak RSS MiB", "peak_rss_mib", 0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["lr", *MODELS], help="lr = the two-rate LR row")
    parser.add_argument("--features", nargs="+", default=["ids", "all"], help="recstack rows per model")
    parser.add_argument(
        "--baseline", action="store_true",
        help="add recstack id rows that transform every schema feature (the behaviour before 2026-11-22)",
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["no"], choices=["no", "bf16", "fp16"],
        help="recstack rows per precision (bf16: CPU autocast where the CPU has native bfloat16)",
    )
    parser.add_argument("--device", default="cpu", help="where both libraries train: cpu, cuda (not --criteo)")
    parser.add_argument("--speed", type=int, metavar="ROUNDS", help="interleaved in-process training speed comparison instead")
    parser.add_argument("--compile", action="store_true", help="--speed: add recstack rows with trainer.compile")
    parser.add_argument("--criteo", type=int, metavar="ROWS", help="run the synthetic Criteo-like DeepFM comparison instead")
    parser.add_argument("--criteo-worker", nargs=2, metavar=("FOLDER", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "FEATURES", "SEED", "TRANSFORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, features, seed, transform = args.worker
        print(json.dumps(run_recstack(name, features, int(seed), args.epochs, transform, args.precisions[0], args.device)))
        return
    if args.criteo_worker:
        print(json.dumps(run_recstack_criteo(Path(args.criteo_worker[0]), int(args.criteo_worker[1]), args.epochs)))
        return
    if args.speed:
        speed_main([m for m in args.models if m != "lr"], args.speed, args.peer_python, args.precisions, args.compile, args.device)
        return
    if args.criteo:
        criteo_main(args.criteo, args.seeds, args.epochs, args.peer_python)
        return

    plan = [("recstack", "lr", "rates", "model", "no")] if "lr" in args.models else []
    for name in (m for m in args.models if m != "lr"):
        plan.append(("DeepCTR-Torch", name, "ids", "model", "no"))
        if args.baseline:
            plan.append(("recstack", name, "ids", "schema", "no"))
        plan += [("recstack", name, features, "model", precision) for features in args.features for precision in args.precisions]
    runs: dict[tuple, list[dict]] = {row: [] for row in plan}
    for seed in args.seeds:  # seed-major: the rows of one seed run side by side in time
        for row in plan:
            library, name, features, transform, precision = row
            if library == "recstack":
                command = [sys.executable, __file__, "--epochs", str(args.epochs), "--precisions", precision, "--device", args.device, "--worker", name, features, str(seed), transform]
            else:
                command = [args.peer_python, str(ROOT / "benchmarks" / "_deepctr_peer.py"), str(DATA_DIR), name, str(seed), str(args.epochs), args.device]
            runs[row].append(subprocess_json(command))
            print(f"# {library} {name} {features} {transform} seed {seed}: {runs[row][-1]}", file=sys.stderr, flush=True)

    print("| library | model | features | transformed | precision | seeds | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---" * (6 + len(COLUMNS)) + "|")
    for (library, name, features, transform, precision), results in runs.items():
        cells = " | ".join(summarise(results, key, digits) for _, key, digits in COLUMNS)
        shown = "its own" if library != "recstack" else ("model's" if transform == "model" else "whole schema")
        print(f"| {library} | {name} | {features} | {shown} | {'fp32' if precision == 'no' else precision} | {len(results)} | {cells} |")


if __name__ == "__main__":
    main()
