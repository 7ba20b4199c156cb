"""Planted-signal synthetic data sets of any size, and their command line.

    python -m recstack.datasets.synthetic --layout ctr --rows 1000000 --out data/ctr.parquet --seed 0
    python -m recstack.datasets.synthetic --layout criteo --rows 1000000 --out data/criteo.parquet
    python -m recstack.datasets.synthetic --layout retrieval --rows 200000 --out data/retrieval/

``ctr`` and ``criteo`` write one Parquet file in chunks (bounded memory); ``retrieval`` writes a
folder laid out like ``build_retrieval``'s, with ``rows / interactions_per_user`` users.
The description of the planted model is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from typing import Any, Sequence

from recstack.datasets.synthetic_criteo import generate_criteo_like
from recstack.datasets.synthetic_ctr import generate_ctr
from recstack.datasets.synthetic_retrieval import generate_retrieval

__all__ = ["Layout", "generate_ctr", "generate_criteo_like", "generate_retrieval", "main", "build_parser", "add_arguments", "generate"]


class Layout(str, Enum):
    CTR = "ctr"
    CRITEO = "criteo"
    RETRIEVAL = "retrieval"


def build_parser() -> argparse.ArgumentParser:
    """The standalone argument parser (``python -m recstack.datasets.synthetic``)."""
    parser = argparse.ArgumentParser(prog="recstack-synthetic", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator's arguments, on ``recstack synth`` or the standalone parser."""
    parser.add_argument("--layout", choices=[layout.value for layout in Layout], required=True)
    parser.add_argument("--rows", type=int, required=True, help="rows (ctr, criteo) or interactions (retrieval)")
    parser.add_argument("--out", required=True, help="Parquet file (ctr, criteo) or folder (retrieval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--interactions-per-user", type=int, default=20, help="retrieval only")
    parser.add_argument("--items", type=int, default=None, help="retrieval: items (default users / 2)")


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the generator that ``args.layout`` names."""
    layout = Layout(args.layout)
    if layout is Layout.CTR:
        return generate_ctr(args.out, rows=args.rows, seed=args.seed, chunk_rows=args.chunk_rows)
    if layout is Layout.CRITEO:
        return generate_criteo_like(args.out, rows=args.rows, seed=args.seed, chunk_rows=args.chunk_rows)
    num_users = max(1, args.rows // args.interactions_per_user)
    return generate_retrieval(
        args.out,
        num_users=num_users,
        num_items=args.items or max(10, num_users // 2),
        interactions_per_user=args.interactions_per_user,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, generate, print the planted model as JSON; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.rows < 0 or args.chunk_rows <= 0:
        print("--rows must be >= 0 and --chunk-rows > 0", file=sys.stderr)
        return 2
    print(json.dumps(generate(args), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
