"""The ``recstack`` command: one subcommand per job, each with ``--help``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from recstack.errors import RecstackError

Handler = Callable[[argparse.Namespace], int]


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


def cmd_train(args: argparse.Namespace) -> int:
    from recstack.config import RunConfig

    config = RunConfig.from_yaml(args.config, overrides=_parse_overrides(args.set))
    if args.nproc and args.nproc > 1:
        from recstack.workflows.distributed import launch

        return launch(args)
    from recstack.workflows.train import train_run

    metrics = train_run(config, resume=args.resume)
    print(json.dumps({k: metrics[k] for k in ("valid", "test") if k in metrics}, indent=1))
    print(f"run folder: {config.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recstack.workflows.predict import evaluate_run

    metrics = evaluate_run(args.run, _data_source(args), threads=args.threads)
    print(json.dumps(metrics, indent=1))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from recstack.workflows.predict import predict_run

    rows = predict_run(args.run, _data_source(args), args.output, threads=args.threads)
    print(f"wrote {rows} scores to {args.output}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from recstack.schema import Schema
    from recstack.workflows.inspect import inspect_data

    report = inspect_data(Schema.from_yaml(args.schema), _data_source(args), max_rows=args.max_rows)
    print(report)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from recstack import datasets

    out = Path(args.out)
    if args.name == "movielens-ctr":
        stats = datasets.build_ctr(out, args.source)
    elif args.name == "movielens-retrieval":
        stats = datasets.build_retrieval(out, args.source)
    elif args.name == "synthetic-ctr":
        from recstack.workflows.datasets import write_synthetic_ctr_splits

        stats = write_synthetic_ctr_splits(out, rows=(args.rows, args.rows // 4, args.rows // 4), seed=args.seed)
    elif args.name == "synthetic-criteo":
        stats = datasets.generate_criteo_like(out, rows=args.rows, seed=args.seed)
    else:
        stats = datasets.generate_retrieval(out, num_users=args.rows // 20, num_items=max(100, args.rows // 10), interactions_per_user=20, seed=args.seed)
    print(json.dumps(stats, indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recstack", description="Deep-learning recommendation: features → models → serving.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, nargs="+", help="CSV/TSV/Parquet file(s) or glob(s)")
        p.add_argument("--delimiter", help="CSV delimiter (default: ',' for .csv, tab for .tsv)")
        p.add_argument("--no-header", action="store_true", help="CSV files have no header line")
        p.add_argument("--column-names", help="comma-separated names for headerless CSV files")
        p.add_argument("--skip-bad-rows", action="store_true", help="skip and count unparseable rows")
        p.add_argument("--threads", type=int, default=1, help="torch threads")

    p = sub.add_parser("train", help="train a model from a config YAML (see docs/config.md)")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted), e.g. trainer.epochs=3")
    p.add_argument("--nproc", type=int, default=0, help="train with N processes (torchrun + DDP)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run folder on a data file")
    p.add_argument("run")
    data_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("predict", help="score every row of a data file with a run folder's model")
    p.add_argument("run")
    data_options(p)
    p.add_argument("--output", required=True, help="output .csv or .parquet (one score per row)")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("data", help="check a data file against a schema and print per-feature statistics")
    p.add_argument("schema", help="schema YAML")
    data_options(p)
    p.add_argument("--max-rows", type=int, default=None, help="stop after this many rows")
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("datasets", help="build a bundled dataset (MovieLens-100K or synthetic) as Parquet")
    p.add_argument("name", choices=["movielens-ctr", "movielens-retrieval", "synthetic-ctr", "synthetic-criteo", "synthetic-retrieval"])
    p.add_argument("--out", required=True, help="output folder (a file for synthetic-criteo)")
    p.add_argument("--source", default=None, help="ml-100k folder or zip (default: cached registry copy)")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_datasets)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_extra_commands()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except RecstackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _load_extra_commands() -> None:
    """Subcommands defined next to the code they run (retrieval, export, serving)."""
    if _EXTRA_COMMANDS:
        return
    from recstack import cli_extra

    _EXTRA_COMMANDS.extend(cli_extra.REGISTRARS)


if __name__ == "__main__":
    sys.exit(main())
