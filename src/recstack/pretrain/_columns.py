"""Reading a few named columns of a Parquet or CSV file (or a folder of Parquet files)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recstack.errors import DataError

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv", ".tsv.gz")


def read_columns(path: str | Path, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of ``path``: CSV/TSV by suffix (compressed too), otherwise Parquet.

    In CSV, empty fields are nulls and no other text is (``"NA"`` stays a string).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"table {str(p)!r} does not exist")
    name = p.name.lower()
    try:
        if name.endswith(_CSV_SUFFIXES):
            delimiter = "\t" if ".tsv" in name else ","
            _require(p, _csv_header(p, delimiter), columns)
            return pcsv.read_csv(
                p,
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                # Only an empty field is missing: "NA" or "null" may well be an id or a title.
                convert_options=pcsv.ConvertOptions(
                    include_columns=list(columns), null_values=[""], strings_can_be_null=True
                ),
            )
        schema = pq.read_schema(p) if p.is_file() else pq.ParquetDataset(p).schema
        _require(p, schema.names, columns)
        return pq.read_table(p, columns=list(columns))
    except (pa.ArrowInvalid, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataError(f"cannot read the table: {error}", path=str(p)) from error


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """Column names from the first block only (the streaming reader stops there)."""
    return pcsv.open_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter)).schema.names


def _require(path: Path, names: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"missing column(s) {missing}; the file has {list(names)}", path=str(path))
