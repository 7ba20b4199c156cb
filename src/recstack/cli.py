"""The ``recstack`` command: every subcommand is listed once, in ``COMMANDS`` at the end of this file.

Each command is two functions side by side: ``_<name>_arguments(parser)`` declares its options and
``_<name>(args)`` runs its workflow (imported when the command runs, so ``--help`` stays quick)
and returns an :class:`Outcome`: a human summary, printed by default, and the same result as
data, printed as JSON with ``--json``. Documented errors (:class:`~recstack.errors.RecstackError`,
and OS errors such as a missing file) print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from recstack.errors import RecstackError

__all__ = ["COMMANDS", "Command", "Outcome", "build_parser", "main"]

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Outcome:
    """What a command did: ``summary`` for people, ``data`` (JSON-serialisable) for ``--json``."""

    summary: str
    data: Any


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Outcome | None]
    json_output: bool = True  # the command has a result to print as JSON


# ---------------------------------------------------------------------------------------------
# shared option groups and formatting


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", help="CSV/TSV/Parquet file(s) or glob(s)")
    parser.add_argument("--delimiter", help="CSV delimiter (default: ',' for .csv, tab for .tsv)")
    parser.add_argument("--no-header", action="store_true", help="CSV files have no header line")
    parser.add_argument("--column-names", help="comma-separated names for headerless CSV files")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip and count unparseable rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def _data_source(args: argparse.Namespace, attr: str = "data"):
    from recstack.data.sources import DataSource

    spec: dict[str, Any] = {"paths": getattr(args, attr)}
    if getattr(args, "delimiter", None):
        spec["delimiter"] = args.delimiter.encode().decode("unicode_escape")
    if getattr(args, "no_header", False):
        spec["header"] = False
    if getattr(args, "column_names", None):
        spec["column_names"] = args.column_names.split(",")
    if getattr(args, "skip_bad_rows", False):
        spec["skip_bad_rows"] = True
    return DataSource.from_config(spec)


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecstackError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return overrides


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``auc 0.7712 gauc 0.7305 logloss 0.5301 accuracy 0.7401 (20,000 rows)``: one line of
    metrics, counts in brackets at the end."""
    counts = {key: metrics[key] for key in ("count", "users") if key in metrics}
    parts = []
    for key, value in metrics.items():
        if key in counts or key == "positive_rate" or isinstance(value, (dict, list)):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    line = " ".join(parts)
    for key, value in counts.items():
        line += f" ({int(value):,} {'rows' if key == 'count' else 'users'})"  # counts may arrive as floats (942.0)
    return line


def _train_summary(metrics: Mapping[str, Any], run_folder: Path) -> str:
    splits = [f"{split} {format_metrics(metrics[split])}" for split in ("valid", "test") if split in metrics]
    lines = [" | ".join(splits)] if splits else []
    lines.append(
        f"best_epoch {metrics['best_epoch']}, epochs_run {metrics['epochs_run']}, "
        f"stopped_early {str(metrics['stopped_early']).lower()}, train {metrics['train_seconds']:.1f} s"
    )
    if "loss_weights" in metrics:  # learned by the multi-task loss (uncertainty, gradnorm, metabalance)
        lines.append("loss weights: " + ", ".join(
            f"{target} " + " ".join(f"{key} {value:.4g}" for key, value in values.items()) for target, values in metrics["loss_weights"].items()
        ))  # fmt: skip
    if "incremental" in metrics:
        from recstack.workflows.incremental import growth_summary

        lines.append(growth_summary(metrics["incremental"]))
    if "item_index" in metrics:  # a sharded run that did not gather its tables (docs/distributed.md)
        index = metrics["item_index"]
        lines.append(f"item index: {index.get('indexed', index['items'])} item vectors written shard by shard ({index['backend']}), tables not gathered: no model.pt")
    lines.append(f"run folder: {os.path.normpath(run_folder)}")  # examples/x/../../runs/y -> runs/y
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# training, evaluation and data


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name (default: refuse)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted), e.g. trainer.epochs=3")
    parser.add_argument("--nproc", type=int, default=0, help="train with N processes (torchrun + DDP)")
    parser.add_argument(
        "--init-from",
        metavar="RUN",
        help="incremental training: continue the run folder RUN on this config's data, its vocabularies and "
        "embedding tables grown by the new ids (docs/incremental.md; the config's incremental: section sets the rest)",
    )


def _train(args: argparse.Namespace) -> Outcome | None:
    from recstack.config import RunConfig

    config = RunConfig.from_yaml(args.config, overrides=_parse_overrides(args.set))
    if args.nproc and args.nproc > 1:
        from recstack.workflows.distributed import launch

        code = launch(args)
        if code:
            raise SystemExit(code)
        return None
    from recstack.workflows.train import train_run

    metrics = train_run(config, resume=args.resume, overwrite=args.overwrite, init_from=args.init_from)
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun worker: rank 0 prints the run's summary
        return None
    return Outcome(_train_summary(metrics, config.output), metrics)


def _tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config with a tune: section (the search space; docs/config.md, Tuning)")
    parser.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (a rerun continues an interrupted tune)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted) in every trial, e.g. trainer.epochs=2")
    parser.add_argument("--out", default=None, help="tune folder (default: runs/NAME_tune next to the run folder)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///TUNE_FOLDER/study.db)")
    parser.add_argument("--study-name", default=None, help="study in the storage (default: the config's name)")
    parser.add_argument("--pruner", choices=["median", "hyperband", "none"], default=None, help="prune trials worse than their peers at an epoch (default: tune.pruner, else median)")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once, each in its own process with one torch thread")
    parser.add_argument("--keep-trials", action="store_true", help="keep every completed trial's run folder (default: the best one only)")


def _tune(args: argparse.Namespace) -> Outcome:
    from recstack.workflows.tune import tune_run

    result = tune_run(
        args.config, trials=args.trials, overrides=_parse_overrides(args.set), out=args.out, storage=args.storage,
        study_name=args.study_name, pruner=args.pruner, jobs=args.jobs, keep_trials=args.keep_trials,
        log=lambda line: print(line, file=sys.stderr),
    )
    best = result["best"]
    params = ", ".join(f"{key}={value}" for key, value in best["params"].items())
    lines = [
        f"{result['trials']} trials ({result['complete']} complete, {result['pruned']} pruned, {result['fail']} failed) in {result['wall_seconds']:.1f} s",
        f"best: trial {best['number']}, valid {result['metric']} {best['value']:.4f} ({params})",
        f"best config: {result['best_config']} (recstack train it); run folder: {best['run']}",
    ]
    return Outcome("\n".join(lines), result)


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    _data_arguments(parser)
    parser.add_argument("--catalog", nargs="+", help="retrieval: the items to rank, one row per item (default: the run's data.catalog)")
    parser.add_argument("--seen", nargs="+", help="retrieval: items to exclude per user, a seen_item_ids list per user or one (user, item) row each, e.g. the training events (default: the run's data.seen)")


def _evaluate(args: argparse.Namespace) -> Outcome:
    from recstack.workflows.predict import evaluate_run

    metrics = evaluate_run(args.run, _data_source(args), threads=args.threads, catalog=args.catalog, seen=args.seen)
    return Outcome(format_metrics(metrics), metrics)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    _data_arguments(parser)
    parser.add_argument("--output", required=True, help="output .csv or .parquet (one score per row); never inside a run folder")


def _predict(args: argparse.Namespace) -> Outcome:
    from recstack.export.run_folder import check_output_path
    from recstack.workflows.predict import predict_run

    check_output_path(args.output)
    rows = predict_run(args.run, _data_source(args), args.output, threads=args.threads)
    return Outcome(f"wrote {rows} scores to {args.output}", {"rows": rows, "output": str(args.output)})


def _data_arguments_command(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("schema", help="schema YAML")
    _data_arguments(parser)
    parser.add_argument("--max-rows", type=int, default=None, help="stop after this many rows")


def _data(args: argparse.Namespace) -> Outcome:
    from recstack.schema import Schema
    from recstack.workflows.inspect import inspect_data

    report = inspect_data(Schema.from_yaml(args.schema), _data_source(args), max_rows=args.max_rows)
    return Outcome(report, {"report": report})


_DATASETS = ["movielens-ctr", "movielens-retrieval", "movielens-multitask", "movielens-sequences", "synthetic-ctr", "synthetic-criteo", "synthetic-multitask", "synthetic-retrieval", "synthetic-sequences"]


def _datasets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=_DATASETS)
    parser.add_argument("--out", required=True, help="output folder (a file for synthetic-criteo)")
    parser.add_argument("--source", default=None, help="ml-100k folder or zip (default: cached registry copy)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=50, help="sequences: the longest input kept (the most recent N items)")
    parser.add_argument("--partitions", type=int, default=1, help="sequences: split the events in N user-hash partitions (bounded memory)")
    parser.add_argument("--split", choices=["leave_one_out", "time"], default="leave_one_out", help="movielens-sequences: leave-one-out, or a global time split (last 10%% of events test, 10%% before valid)")


def _datasets(args: argparse.Namespace) -> Outcome:
    from recstack import datasets

    out = Path(args.out)
    if args.name == "movielens-ctr":
        stats = datasets.build_ctr(out, args.source)
    elif args.name == "movielens-retrieval":
        stats = datasets.build_retrieval(out, args.source)
    elif args.name == "movielens-multitask":
        stats = datasets.build_multitask(out, args.source, seed=args.seed)
    elif args.name == "synthetic-multitask":
        stats = datasets.generate_multitask(out, rows=(args.rows, args.rows // 4, args.rows // 4), seed=args.seed)
    elif args.name == "movielens-sequences":
        stats = datasets.build_sequences(out, args.source, max_len=args.max_len, how=args.split, partitions=args.partitions)
    elif args.name == "synthetic-sequences":
        stats = datasets.generate_sequences(out, num_users=max(10, args.rows // 20), num_items=max(50, args.rows // 40), length=20, seed=args.seed, max_len=args.max_len)
    elif args.name == "synthetic-ctr":
        from recstack.workflows.datasets import write_synthetic_ctr_splits

        stats = write_synthetic_ctr_splits(out, rows=(args.rows, args.rows // 4, args.rows // 4), seed=args.seed)
    elif args.name == "synthetic-criteo":
        stats = datasets.generate_criteo_like(out, rows=args.rows, seed=args.seed)
    else:
        stats = datasets.generate_retrieval(out, num_users=args.rows // 20, num_items=max(100, args.rows // 10), interactions_per_user=20, seed=args.seed)
    stats = json.loads(json.dumps(stats, default=str))
    return Outcome(f"wrote {args.name} to {out}{_sizes(stats)}", stats)


def _sizes(stats: Mapping[str, Any]) -> str:
    """`` (80,000 train / 10,000 valid rows)``-style counts found in a dataset's stats."""
    counts = [f"{value:,} {key}" for key, value in stats.items() if isinstance(value, int) and not isinstance(value, bool) and key not in ("seed", "format_version")]
    return f" ({', '.join(counts[:6])})" if counts else ""


# ---------------------------------------------------------------------------------------------
# vectors: item2vec, text encoders, synthetic data


def _item2vec_arguments(parser: argparse.ArgumentParser) -> None:
    from recstack.pretrain.cli import add_item2vec_arguments

    add_item2vec_arguments(parser)


def _item2vec(args: argparse.Namespace) -> Outcome:
    from recstack.pretrain.cli import run_item2vec

    written = _as_bad_input(run_item2vec, args)
    return Outcome(f"wrote {written['vectors']} item vectors of dim {written['dim']} to {written['path']}", written)


def _encode_text_arguments(parser: argparse.ArgumentParser) -> None:
    from recstack.pretrain.cli import add_encode_text_arguments

    add_encode_text_arguments(parser)


def _encode_text(args: argparse.Namespace) -> Outcome:
    from recstack.pretrain.cli import run_encode_text

    written = _as_bad_input(run_encode_text, args)
    return Outcome(f"wrote {written['vectors']} text vectors of dim {written['dim']} to {written['path']}", written)


def _as_bad_input(run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> Any:
    """gensim, sentence-transformers and a missing extra report bad input as ValueError / ImportError."""
    try:
        return run(args)
    except (ValueError, ImportError) as error:
        if isinstance(error, RecstackError):
            raise
        raise RecstackError(str(error)) from error


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from recstack.datasets.synthetic import add_arguments

    add_arguments(parser)


def _synth(args: argparse.Namespace) -> Outcome:
    from recstack.datasets.synthetic import generate

    if args.rows < 0 or args.chunk_rows <= 0:
        raise RecstackError("--rows must be >= 0 and --chunk-rows > 0")
    planted = json.loads(json.dumps(generate(args), default=str))
    return Outcome(f"wrote a synthetic {args.layout} data set of {args.rows:,} rows to {args.out} (--json: the planted model)", planted)


# ---------------------------------------------------------------------------------------------
# two-tower runs: towers, vectors, index; serving


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder of a two-tower model")
    parser.add_argument("--catalog", default=None, help="item catalogue for the check rows (default: the run's)")
    parser.add_argument("--data", default=None, help="user rows for the check (default: the run's train file)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest allowed |ONNX - PyTorch|")


def _export(args: argparse.Namespace) -> Outcome:
    from recstack.workflows.export import export_run

    report = export_run(args.run, catalog=args.catalog, data=args.data, atol=args.atol)
    lines = [f"{side} tower: {report[side]['onnx']}, max |onnx - torch| = {report[side]['max_abs_error']:.2e}" for side in ("user", "item")]
    return Outcome("\n".join(lines), json.loads(json.dumps(report, default=str)))


def _embed_items_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--catalog", default=None, help="item catalogue, one row per item (default: the run's)")
    parser.add_argument("--output", required=True, help="FILE.parquet (item id, vector) or FILE.npy (+ FILE.ids.npy)")


def _embed_items(args: argparse.Namespace) -> Outcome:
    from recstack.export.run_folder import check_output_path
    from recstack.workflows.export import embed_items_run

    check_output_path(args.output)
    count = embed_items_run(args.run, catalog=args.catalog, output=args.output)
    return Outcome(f"wrote {count} item vectors to {args.output}", {"vectors": count, "output": str(args.output)})


def _embed_users_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--data", required=True, help="rows holding the user tower's columns")
    parser.add_argument("--output", required=True, help="FILE.parquet (user id, vector) or FILE.npy (+ FILE.ids.npy)")
    parser.add_argument("--user-column", default="user_id")


def _embed_users(args: argparse.Namespace) -> Outcome:
    from recstack.export.run_folder import check_output_path
    from recstack.workflows.export import embed_users_run

    check_output_path(args.output)
    count = embed_users_run(args.run, data=args.data, output=args.output, user_column=args.user_column)
    return Outcome(f"wrote {count} user vectors to {args.output}", {"vectors": count, "output": str(args.output)})


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run")
    parser.add_argument("--catalog", default=None, help="item catalogue (default: the run's)")
    parser.add_argument("--backend", choices=["exact", "faiss", "milvus"], default="faiss")
    parser.add_argument("--kind", choices=["flat", "hnsw", "ivf"], default=None, help="faiss index kind / Milvus index type")
    parser.add_argument("--uri", default=None, help="Milvus server address or Milvus Lite file")
    parser.add_argument("--collection", default="items", help="Milvus collection")
    parser.add_argument("--output", required=True, help="index folder to write")


def _index(args: argparse.Namespace) -> Outcome:
    from recstack.export.run_folder import check_output_path
    from recstack.workflows.export import build_index_run

    check_output_path(args.output, owned=("index",))
    kind = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}[args.kind] if args.backend == "milvus" and args.kind else args.kind
    summary = build_index_run(args.run, catalog=args.catalog, backend=args.backend, output=args.output, kind=kind, uri=args.uri, collection=args.collection)
    return Outcome(f"indexed {summary.describe()} in {args.output}", summary.as_dict())


def _query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index folder written by `recstack index`")
    parser.add_argument("--vectors", required=True, help="user vectors as `recstack embed-users` writes them: FILE.parquet (user id, vector) or FILE.npy (+ FILE.ids.npy)")
    parser.add_argument("--k", type=int, default=10, help="items per user")
    parser.add_argument("--output", default=None, help="results.parquet or results.csv: one row per (user, rank, item id, score) (default: print the first users)")
    parser.add_argument("--show", type=int, default=5, help="users printed without --output")


def _query(args: argparse.Namespace) -> Outcome:
    from recstack.workflows.query import format_top_k, query_index, write_results

    if args.output:
        from recstack.export.run_folder import check_output_path

        check_output_path(args.output)
    result = query_index(args.index, args.vectors, k=args.k)
    users = len(result.user_ids)
    if args.output:
        write_results(result, args.output)
        summary = f"wrote the top {result.k} {result.item_column} of {users:,} users ({result.user_column}) to {args.output}: {int(result.found.sum()):,} rows ({result.user_column}, rank, {result.item_column}, score)"
        return Outcome(summary, {"users": users, "k": result.k, "user_column": result.user_column, "item_column": result.item_column, "output": str(args.output)})
    shown = min(args.show, users)
    more = f"\n... {users - shown:,} more users (--output FILE or --json for all)" if users > shown else ""
    summary = f"top {result.k} {result.item_column} (score) of {users:,} users ({result.user_column}):\n{format_top_k(result, shown)}{more}"
    return Outcome(summary, result.as_dict())


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from recstack.serving.limits import ServingLimits  # plain constants: cheap at parser build
    from recstack.serving.types import DEFAULT_USER_CACHE

    parser.add_argument("--retrieval", required=True, help="two-tower run folder")
    parser.add_argument("--ranker", required=True, help="ranking (CTR) run folder")
    parser.add_argument("--catalog", required=True, help="items.parquet: item_id, title, genres and item features")
    parser.add_argument("--users", default=None, help="users.parquet: user_id and user features")
    parser.add_argument("--history", default=None, help="interactions (user_id, item_id, timestamp): each user's last 50 positives")
    parser.add_argument("--user-column", default="user_id", help="user-id column of --users and --history (seed 001: client_id)")
    parser.add_argument("--history-label-column", default="label", help="history rows with a value > 0 in this column are positives; 'none': every row (seed 001: act)")
    parser.add_argument("--history-time-column", default="timestamp", help="orders each user's history (oldest first)")
    parser.add_argument("--index", default=None, help="saved index folder (default: built at start-up)")
    parser.add_argument("--backend", choices=["exact", "faiss"], default="faiss", help="index built at start-up")
    parser.add_argument("--kind", choices=["flat", "hnsw", "ivf"], default="flat")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per worker)")
    parser.add_argument("--workers", type=int, default=1, help="server processes on the port, each with its own models and caches")
    parser.add_argument("--batch-window-ms", type=float, default=1.0, help="concurrent requests within this window share one model pass (0: off)")
    parser.add_argument("--user-cache", type=int, default=DEFAULT_USER_CACHE, help="stored users whose user vector and ranker row are kept between requests, ~6 KB each (0: off)")
    limits = ServingLimits()  # per-request limits (docs/reliability.md): 422 / 413 beyond them, 504 past the deadline
    parser.add_argument("--max-users", type=int, default=None, help=f"requests (users) in one body (default {limits.max_users})")
    parser.add_argument("--max-candidates", type=int, default=None, help=f"candidates of one request (default {limits.max_candidates})")
    parser.add_argument("--max-k", type=int, default=None, help=f"k of one request (default {limits.max_k})")
    parser.add_argument("--max-history", type=int, default=None, help=f"items in a request's own history (default {limits.max_history})")
    parser.add_argument("--max-body-bytes", type=int, default=None, help=f"request body size, refused before parsing (default {limits.max_body_bytes})")
    parser.add_argument("--deadline-ms", type=int, default=None, help=f"a request not answered in this time gets 504 (default {limits.deadline_ms})")
    parser.add_argument("--chunk-rows", type=int, default=None, help=f"(user, candidate) rows per ranker pass (default {limits.chunk_rows})")
    parser.add_argument("--blend", default=None, help="a multi-task ranker's rank score from its heads: product:click=1,like=0.5 or sum:click=0.3,click_and_like=0.7 (default: product of its targets)")


def _serve(args: argparse.Namespace) -> None:
    from recstack.export.run_folder import check_run_folder
    from recstack.workflows.serve import serve, serving_limits

    limits = {name: getattr(args, name) for name in ("max_users", "max_candidates", "max_k", "max_history", "max_body_bytes", "deadline_ms", "chunk_rows")}
    serving_limits(**limits)  # a bad limit is a ConfigError before any model is loaded
    if args.blend:
        from recstack.serving.blend import Blend

        Blend.parse(args.blend)  # so is a malformed --blend
    for run in (args.retrieval, args.ranker):
        check_run_folder(run)
    window = args.batch_window_ms if args.batch_window_ms > 0 else None
    serve(host=args.host, port=args.port, workers=args.workers, threads=args.threads, batch_window_ms=window, retrieval=args.retrieval, ranker=args.ranker, catalog=args.catalog, users=args.users, history=args.history, index=args.index, backend=args.backend, kind=args.kind, user_cache_size=args.user_cache, user_column=args.user_column, history_label_column=None if args.history_label_column.lower() == "none" else args.history_label_column, history_time_column=args.history_time_column, blend=args.blend, **limits)


# ---------------------------------------------------------------------------------------------
# every subcommand, in the order ``recstack --help`` lists them

COMMANDS: tuple[Command, ...] = (
    Command("train", "train a model from a config YAML (see docs/config.md)", _train_arguments, _train),
    Command("tune", "search hyper-parameters with Optuna over the config's tune: section", _tune_arguments, _tune),
    Command("evaluate", "evaluate a run folder on a data file", _evaluate_arguments, _evaluate),
    Command("predict", "score every row of a data file with a run folder's model", _predict_arguments, _predict),
    Command("data", "check a data file against a schema and print per-feature statistics", _data_arguments_command, _data),
    Command("datasets", "build a bundled dataset (MovieLens-100K or synthetic) as Parquet", _datasets_arguments, _datasets),
    Command("synth", "generate a synthetic dataset of any size with a planted model", _synth_arguments, _synth),
    Command("item2vec", "train item2vec vectors on an event table", _item2vec_arguments, _item2vec),
    Command("encode-text", "encode a text column with a local sentence model", _encode_text_arguments, _encode_text),
    Command("export", "export a two-tower run's user and item towers (weights + ONNX, checked) into RUN/export/", _export_arguments, _export),
    Command("embed-items", "item vectors of a two-tower run for a catalogue (.parquet or .npy)", _embed_items_arguments, _embed_items),
    Command("embed-users", "user vectors of a two-tower run, one per row of a data file", _embed_users_arguments, _embed_users),
    Command("index", "build and save the item index of a two-tower run", _index_arguments, _index),
    Command("query", "top-k items of each user vector (embed-users output) from an index folder", _query_arguments, _query),
    Command("serve", "serve two-stage recommendations (recall + rank) over HTTP, with a demo page", _serve_arguments, _serve, json_output=False),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recstack", description="Deep-learning recommendation: features → models → serving.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(command_parser)
        if command.json_output:
            command_parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
        command_parser.set_defaults(command_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        outcome = args.command_run(args)
    except (RecstackError, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if outcome is not None:
        print(json.dumps(outcome.data, indent=1, default=str) if getattr(args, "json", False) else outcome.summary)
    return 0


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
