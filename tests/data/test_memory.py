"""Files much larger than a batch stream in bounded memory, fitting and transforming alike."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS = 2_000_000
ROW_GROUP = 100_000
CATEGORICAL = 12
NUMERIC = 4

STREAM = """
import json, resource, sys
import torch
torch.set_num_threads(1)
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema

path, small, schema = sys.argv[1], sys.argv[2], Schema.from_dict(json.loads(sys.argv[3]))
loader = LoaderConfig(batch_size=4096, **json.loads(sys.argv[4]))
# Warm up on a small file first: code paths touched once (libraries, kernels) are not data.
warm = DataSource(paths=(small,))
for batch in BatchStream(source=warm, preprocessor=Preprocessor(schema).fit(warm), config=LoaderConfig(batch_size=4096)):
    pass
source = DataSource(paths=(path,))
pre = Preprocessor(schema)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pre.fit(source)
after_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = 0
for batch in BatchStream(source=source, preprocessor=pre, config=loader):
    rows += len(batch)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "baseline_kib": baseline, "after_fit_kib": after_fit, "peak_kib": peak}))
"""


def write_large_parquet(path, rows: int = ROWS) -> int:
    """Writes ``rows`` rows a row group at a time; returns the table's in-memory size in bytes."""
    rng = np.random.default_rng(0)
    writer = None
    size = 0
    for start in range(0, rows, ROW_GROUP):
        n = min(ROW_GROUP, rows - start)
        columns = {"label": rng.integers(0, 2, n)}
        columns.update({f"c{i}": rng.zipf(1.3, n) % 1000 for i in range(CATEGORICAL)})
        columns.update({f"n{i}": rng.exponential(5.0, n) for i in range(NUMERIC)})
        table = pa.table(columns)
        size += table.nbytes
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return size


@pytest.mark.slow
@pytest.mark.parametrize("loader", [{"cache": False}, {"cache_max_mb": 32}], ids=["streaming", "auto-cache-past-its-limit"])
def test_streaming_a_large_parquet_file_uses_bounded_memory(tmp_path, loader):
    path = tmp_path / "large.parquet"
    table_bytes = write_large_parquet(path)
    write_large_parquet(tmp_path / "small.parquet", rows=ROW_GROUP)
    schema = {
        "label": "label",
        "features": [{"name": f"c{i}", "kind": "categorical"} for i in range(CATEGORICAL)]
        + [{"name": f"n{i}", "kind": "numeric", "transform": "log1p"} for i in range(NUMERIC)],
    }
    result = subprocess.run(
        [sys.executable, "-c", STREAM, str(path), str(tmp_path / "small.parquet"), json.dumps(schema), json.dumps(loader)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    usage = json.loads(result.stdout)
    assert usage["rows"] == ROWS
    grown = (usage["peak_kib"] - usage["baseline_kib"]) * 1024
    # The whole table would take ~270 MB; fitting and streaming hold a few row groups at most.
    # (The auto cache, default for data that fits loader.cache_max_mb, holds a whole pass by
    # design: past its limit it lets the pass go and streams.)
    assert table_bytes > 250e6
    assert grown < table_bytes / 4, usage
