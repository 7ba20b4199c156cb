"""Throughput of the data layer: Parquet -> Preprocessor -> BatchStream -> batches of 4096.

    python benchmarks/data_pipeline.py --rows 2000000 --threads 1 --layout criteo --out /tmp/recstack-bench
    python benchmarks/data_pipeline.py --rows 2000000 --threads 1 --layout sequence --out /tmp/recstack-bench

Layouts:
    criteo    label, I1..I13 counts (log1p), C1..C26 integer ids with Zipf frequencies and
              vocabularies up to 1M values (``recstack.datasets.synthetic.generate_criteo_like``
              when it is importable, else an equivalent NumPy generator below).
    sequence  label, user_id / item_id / cate_id, 4 numerics, and ``hist_item_ids``: a list<int64>
              column of 50 past items sharing ``item_id``'s table (maxlen 50).

The data file is generated once per (layout, rows, seed) under ``--out`` and reused. Fitting is
timed on its own; throughput is rows per second of the streaming pass (wall clock, and per CPU
second, which a machine shared with other jobs distorts less), and peak RSS is the
process's ``ru_maxrss`` after fitting and after streaming. ``--profile`` adds a cProfile of the
streaming pass.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema

BATCH_SIZE = 4096
CHUNK_ROWS = 200_000  # rows generated (and written as one row group) at a time
SEQUENCE_LENGTH = 50
CRITEO_VOCAB = (
    1460, 583, 1_000_000, 1_000_000, 305, 24, 12517, 633, 3, 93145, 5683, 1_000_000, 3194,
    27, 14992, 1_000_000, 10, 5652, 2173, 4, 1_000_000, 18, 15, 286181, 105, 142572,
)  # fmt: skip


# ---- data ------------------------------------------------------------------------------------
def zipf_ids(rng: np.random.Generator, size: int | tuple[int, ...], vocab: int, exponent: float = 1.1) -> np.ndarray:
    """Ids in ``1..vocab``, frequency ~ rank^-exponent (inverse CDF of a bounded power law)."""
    power = 1.0 - exponent
    ranks = np.power(((vocab + 1.0) ** power - 1.0) * rng.random(size) + 1.0, 1.0 / power).astype(np.int64) - 1
    return (np.minimum(ranks, vocab - 1) * 2_654_435_761) % vocab + 1  # scrambled: id order is not rank order


def criteo_chunk(rng: np.random.Generator, rows: int) -> pa.Table:
    columns: dict[str, pa.Array] = {"label": pa.array((rng.random(rows) < 0.25).astype(np.float32))}
    for k in range(1, 14):
        counts = np.floor(rng.lognormal(np.log(5.0), 1.0 + 0.1 * k, rows)).astype(np.int64)
        columns[f"I{k}"] = pa.array(counts, mask=rng.random(rows) < 0.2)
    for j, vocab in enumerate(CRITEO_VOCAB, start=1):
        columns[f"C{j}"] = pa.array(zipf_ids(rng, rows, vocab, 1.05 + 0.1 * (j % 3)))
    return pa.table(columns)


def sequence_chunk(rng: np.random.Generator, rows: int) -> pa.Table:
    history = zipf_ids(rng, (rows, SEQUENCE_LENGTH), 1_000_000)
    offsets = np.arange(0, rows * SEQUENCE_LENGTH + 1, SEQUENCE_LENGTH, dtype=np.int32)
    return pa.table(
        {
            "label": pa.array((rng.random(rows) < 0.25).astype(np.float32)),
            "user_id": zipf_ids(rng, rows, 1_000_000),
            "item_id": zipf_ids(rng, rows, 1_000_000),
            "cate_id": zipf_ids(rng, rows, 10_000),
            **{f"n{k}": rng.exponential(3.0, rows) for k in range(4)},
            "hist_item_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(history.ravel())),
        }
    )


def write_data(path: Path, layout: str, rows: int, seed: int) -> str:
    """Writes the data file (once); returns which generator made it."""
    if path.exists():
        return "reused"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if layout == "criteo":
        try:
            from recstack.datasets.synthetic import generate_criteo_like

            generate_criteo_like(partial, rows=rows, seed=seed, chunk_rows=CHUNK_ROWS)
            partial.replace(path)
            return "recstack.datasets.synthetic.generate_criteo_like"
        except ImportError:
            pass
    make_chunk = criteo_chunk if layout == "criteo" else sequence_chunk
    writer = None
    for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
        table = make_chunk(np.random.default_rng([seed, index]), min(CHUNK_ROWS, rows - start))
        writer = writer or pq.ParquetWriter(partial, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    partial.replace(path)
    return "benchmarks/data_pipeline.py (NumPy)"


def schema_for(layout: str) -> Schema:
    if layout == "criteo":
        features = [{"name": f"I{k}", "kind": "numeric", "transform": "log1p"} for k in range(1, 14)]
        features += [{"name": f"C{j}", "kind": "categorical"} for j in range(1, 27)]
        return Schema.from_dict({"label": "label", "features": features})
    return Schema.from_dict(
        {
            "label": "label",
            "tables": {"item": {"dim": 16}},
            "features": [
                {"name": "user_id", "kind": "categorical"},
                {"name": "item_id", "kind": "categorical", "table": "item"},
                {"name": "cate_id", "kind": "categorical"},
                *({"name": f"n{k}", "kind": "numeric"} for k in range(4)),
                {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": SEQUENCE_LENGTH},
            ],
        }
    )


# ---- measurement -----------------------------------------------------------------------------
def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def stream_rows(stream: BatchStream) -> int:
    rows = 0
    for batch in stream:
        rows += len(batch)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    pa.set_cpu_count(args.threads)
    pa.set_io_thread_count(args.threads)
    out = Path(args.out)
    path = out / f"{args.layout}-{args.rows}-seed{args.seed}.parquet"
    started = time.perf_counter()
    generator = write_data(path, args.layout, args.rows, args.seed)
    generate_s = time.perf_counter() - started

    source = DataSource(paths=(str(path),))
    started, cpu_started = time.perf_counter(), time.process_time()
    pre = Preprocessor(schema_for(args.layout)).fit(source)
    fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    rss_after_fit = peak_rss_mib()

    stream = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=BATCH_SIZE))
    profile = cProfile.Profile() if args.profile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    rows = stream_rows(stream)
    if profile is not None:
        profile.disable()
    stream_s, stream_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    if rows != args.rows:
        raise SystemExit(f"streamed {rows} rows, expected {args.rows}")

    tables = pre.feature_map().tables
    result = {
        "layout": args.layout,
        "rows": rows,
        "threads": args.threads,
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "generator": generator,
        "generate_s": round(generate_s, 2),
        "fit_s": round(fit_s, 2),
        "fit_rows_per_s": round(rows / fit_s),
        "fit_cpu_s": round(fit_cpu_s, 2),
        "stream_s": round(stream_s, 2),
        "stream_cpu_s": round(stream_cpu_s, 2),
        "rows_per_s": round(rows / stream_s),
        "rows_per_s_per_thread": round(rows / stream_s / args.threads),
        "rows_per_cpu_s": round(rows / stream_cpu_s),
        "peak_rss_after_fit_mib": round(rss_after_fit),
        "peak_rss_mib": round(peak_rss_mib()),
        "largest_table_rows": max(t.num_rows for t in tables.values()),
    }
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.profile)
        result["profile"] = text.getvalue()
    return result


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("layout", result["layout"]),
        ("rows", f"{result['rows']:,}"),
        ("threads (torch, Arrow CPU, Arrow IO)", result["threads"]),
        ("Parquet file", f"{result['file_mib']} MiB ({result['generator']})"),
        ("fit (one pass)", f"{result['fit_s']} s wall, {result['fit_cpu_s']} s CPU = {result['fit_rows_per_s']:,} rows/s"),
        (f"stream to batches of {BATCH_SIZE}", f"{result['stream_s']} s wall, {result['stream_cpu_s']} s CPU"),
        ("**throughput**", f"**{result['rows_per_s']:,} rows/s** ({result['rows_per_s_per_thread']:,} per thread)"),
        ("rows per CPU second (all threads)", f"{result['rows_per_cpu_s']:,}"),
        ("peak RSS after fit / after stream", f"{result['peak_rss_after_fit_mib']} / {result['peak_rss_mib']} MiB"),
        ("largest table", f"{result['largest_table_rows']:,} rows"),
    ]
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch and Arrow (CPU and IO) threads")
    parser.add_argument("--layout", choices=["criteo", "sequence"], default="criteo")
    parser.add_argument("--out", default="/tmp/recstack-bench", help="folder for the data file and results JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions of a cProfile")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rows < 1 or args.threads < 1:
        print("--rows and --threads must be >= 1", file=sys.stderr)
        return 2
    result = run(args)
    profile = result.pop("profile", None)
    results_path = Path(args.out) / f"{args.layout}-{args.rows}-threads{args.threads}.json"
    results_path.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    if profile:
        print("\n" + profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
