"""Output folders: Parquet writing, ``stats.json`` and the "already built" check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

STATS_FILE = "stats.json"


def cache_dir() -> Path:
    """Where downloaded data sets live: ``$RECSTACK_CACHE`` or ``~/.cache/recstack``."""
    configured = os.environ.get("RECSTACK_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "recstack"


def cached_stats(out_dir: Path, files: list[str], params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored stats when every file exists and ``stats.json`` was built with ``params``."""
    stats_path = out_dir / STATS_FILE
    if not stats_path.is_file() or not all((out_dir / name).is_file() for name in files):
        return None
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return stats if stats.get("params") == json.loads(json.dumps(dict(params))) else None


def write_tables(out_dir: Path, tables: Mapping[str, pa.Table]) -> None:
    """Write each table as ``out_dir/<name>.parquet``, first dropping any old ``stats.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).unlink(missing_ok=True)
    for name, table in tables.items():
        pq.write_table(table, out_dir / f"{name}.parquet")


def write_stats(out_dir: Path, stats: Mapping[str, Any]) -> None:
    """Write ``stats.json`` last, so its presence marks a complete build."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).write_text(json.dumps(dict(stats), indent=2, sort_keys=True) + "\n")
