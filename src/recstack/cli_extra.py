"""Subcommands registered beside the ones in cli.py: pretraining, export, retrieval and serving.

Each registrar adds one parser to the ``recstack`` subparsers; the work is in
``recstack.workflows.export`` / ``recstack.workflows.serve`` (imported when a command runs).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

REGISTRARS: list[Callable[[Any], None]] = []


def registrar(function: Callable[[Any], None]) -> Callable[[Any], None]:
    REGISTRARS.append(function)
    return function


def _forward(main: Callable[[Sequence[str] | None], int]) -> Callable[[argparse.Namespace], int]:
    return lambda args: main(args.argv)


def _passthrough(sub: Any, name: str, help: str, main_path: str) -> None:
    """A command whose own argparse parser (in another module) reads the rest of the line."""

    def run(args: argparse.Namespace) -> int:
        module, function = main_path.rsplit(".", 1)
        import importlib

        return int(getattr(importlib.import_module(module), function)(args.argv) or 0)

    p = sub.add_parser(name, help=help, add_help=False, prefix_chars="\x00")  # every argument passes through, --help included
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(handler=run)


@registrar
def _pretrain(sub: Any) -> None:
    _passthrough(sub, "item2vec", "train item2vec vectors on an event table (see recstack item2vec --help)", "recstack.pretrain.cli.item2vec_main")
    _passthrough(sub, "encode-text", "encode a text column with a local sentence model (see recstack encode-text --help)", "recstack.pretrain.cli.encode_text_main")
    _passthrough(sub, "synth", "generate a synthetic dataset with a planted model (see recstack synth --help)", "recstack.datasets.synthetic.main")


@registrar
def _export(sub: Any) -> None:
    p = sub.add_parser("export", help="export a two-tower run's user and item towers (weights + ONNX, checked) into RUN/export/")
    p.add_argument("run", help="run folder of a two-tower model")
    p.add_argument("--catalog", default=None, help="item catalogue for the check rows (default: the run's)")
    p.add_argument("--data", default=None, help="user rows for the check (default: the run's train file)")
    p.add_argument("--atol", type=float, default=1e-5, help="largest allowed |ONNX - PyTorch|")

    def run(args: argparse.Namespace) -> int:
        from recstack.workflows.export import export_run

        report = export_run(args.run, catalog=args.catalog, data=args.data, atol=args.atol)
        for side in ("user", "item"):
            print(f"{side} tower: {report[side]['onnx']}, max |onnx - torch| = {report[side]['max_abs_error']:.2e}")
        return 0

    p.set_defaults(handler=run)


@registrar
def _embed(sub: Any) -> None:
    p = sub.add_parser("embed-items", help="item vectors of a two-tower run for a catalogue (.parquet or .npy)")
    p.add_argument("run")
    p.add_argument("--catalog", default=None, help="item catalogue, one row per item (default: the run's)")
    p.add_argument("--output", required=True, help="FILE.parquet (item_id, vector) or FILE.npy (+ FILE.ids.npy)")

    def items(args: argparse.Namespace) -> int:
        from recstack.workflows.export import embed_items_run

        print(f"wrote {embed_items_run(args.run, catalog=args.catalog, output=args.output)} item vectors to {args.output}")
        return 0

    p.set_defaults(handler=items)

    p = sub.add_parser("embed-users", help="user vectors of a two-tower run, one per row of a data file")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="rows holding the user tower's columns")
    p.add_argument("--output", required=True, help="FILE.parquet (user_id, vector) or FILE.npy (+ FILE.ids.npy)")
    p.add_argument("--user-column", default="user_id")

    def users(args: argparse.Namespace) -> int:
        from recstack.workflows.export import embed_users_run

        print(f"wrote {embed_users_run(args.run, data=args.data, output=args.output, user_column=args.user_column)} user vectors to {args.output}")
        return 0

    p.set_defaults(handler=users)


@registrar
def _index(sub: Any) -> None:
    p = sub.add_parser("index", help="build and save the item index of a two-tower run")
    p.add_argument("run")
    p.add_argument("--catalog", default=None, help="item catalogue (default: the run's)")
    p.add_argument("--backend", choices=["exact", "faiss", "milvus"], default="faiss")
    p.add_argument("--kind", choices=["flat", "hnsw", "ivf"], default=None, help="faiss index kind / Milvus index type")
    p.add_argument("--uri", default=None, help="Milvus server address or Milvus Lite file")
    p.add_argument("--collection", default="items", help="Milvus collection")
    p.add_argument("--output", required=True, help="index folder to write")

    def run(args: argparse.Namespace) -> int:
        from recstack.workflows.export import build_index_run

        kind = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}[args.kind] if args.backend == "milvus" and args.kind else args.kind
        n = build_index_run(args.run, catalog=args.catalog, backend=args.backend, output=args.output, kind=kind, uri=args.uri, collection=args.collection)
        print(f"indexed {n} items ({args.backend}) in {args.output}")
        return 0

    p.set_defaults(handler=run)


@registrar
def _serve(sub: Any) -> None:
    from recstack.serving.types import DEFAULT_USER_CACHE  # plain constants: cheap at parser build

    p = sub.add_parser("serve", help="serve two-stage recommendations (recall + rank) over HTTP, with a demo page")
    p.add_argument("--retrieval", required=True, help="two-tower run folder")
    p.add_argument("--ranker", required=True, help="ranking (CTR) run folder")
    p.add_argument("--catalog", required=True, help="items.parquet: item_id, title, genres and item features")
    p.add_argument("--users", default=None, help="users.parquet: user_id and user features")
    p.add_argument("--history", default=None, help="interactions (user_id, item_id, timestamp): each user's last 50 positives")
    p.add_argument("--index", default=None, help="saved index folder (default: built at start-up)")
    p.add_argument("--backend", choices=["exact", "faiss"], default="faiss", help="index built at start-up")
    p.add_argument("--kind", choices=["flat", "hnsw", "ivf"], default="flat")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (per worker)")
    p.add_argument("--workers", type=int, default=1, help="server processes on the port, each with its own models and caches")
    p.add_argument("--batch-window-ms", type=float, default=1.0, help="concurrent requests within this window share one model pass (0: off)")
    p.add_argument("--user-cache", type=int, default=DEFAULT_USER_CACHE, help="stored users whose user vector and ranker row are kept between requests, ~6 KB each (0: off)")

    def run(args: argparse.Namespace) -> int:
        from recstack.workflows.serve import serve

        window = args.batch_window_ms if args.batch_window_ms > 0 else None
        serve(host=args.host, port=args.port, workers=args.workers, threads=args.threads, batch_window_ms=window, retrieval=args.retrieval, ranker=args.ranker, catalog=args.catalog, users=args.users, history=args.history, index=args.index, backend=args.backend, kind=args.kind, user_cache_size=args.user_cache)
        return 0

    p.set_defaults(handler=run)
