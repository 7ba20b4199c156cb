"""The bad-input corpus through the CLI: each bad training file makes ``recstack train --overwrite``
exit 2 with a one-line error naming the file (and the row and column where there is one), no
traceback, and the previous run folder byte-identical, with no partial run left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.cli import main

from .conftest import folder_digest, write_config


def _frame(ctr_data: Path) -> pd.DataFrame:
    """300 rows of the columns the run's schema reads (one value per cell: no list columns)."""
    return pq.read_table(ctr_data / "train.parquet", columns=["user_id", "item_id", "cat_0", "num_0", "label"]).to_pandas().head(300)


def _csv(frame: pd.DataFrame, path: Path, **options) -> Path:
    frame.to_csv(path, index=False, **options)
    return path


def missing_column(ctr_data: Path, folder: Path) -> Path:
    return _csv(_frame(ctr_data).drop(columns=["num_0"]), folder / "train.csv")


def text_in_a_number(ctr_data: Path, folder: Path) -> Path:
    frame = _frame(ctr_data).astype({"num_0": str})
    frame.loc[41, "num_0"] = "forty"
    return _csv(frame, folder / "train.csv")


def infinity(ctr_data: Path, folder: Path) -> Path:
    frame = _frame(ctr_data)
    frame.loc[12, "num_0"] = np.inf
    return _csv(frame, folder / "train.csv")


def nan_in_parquet(ctr_data: Path, folder: Path) -> Path:
    table = pa.Table.from_pandas(_frame(ctr_data), preserve_index=False)
    values = table.column("num_0").to_numpy().copy()
    values[99] = np.nan  # a real NaN, not a null (a null is a missing value: filled)
    path = folder / "train.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("num_0"), "num_0", pa.array(values, from_pandas=False)), path)
    return path


def label_outside_0_1(ctr_data: Path, folder: Path) -> Path:
    frame = _frame(ctr_data)
    frame.loc[5, "label"] = 3
    return _csv(frame, folder / "train.csv")


def missing_label(ctr_data: Path, folder: Path) -> Path:
    frame = _frame(ctr_data).astype({"label": "float64"})
    frame.loc[6, "label"] = np.nan
    return _csv(frame, folder / "train.csv")


def empty_file(ctr_data: Path, folder: Path) -> Path:
    path = folder / "train.csv"
    path.write_text("")
    return path


def header_only(ctr_data: Path, folder: Path) -> Path:
    path = folder / "train.csv"
    path.write_text(",".join(_frame(ctr_data).columns) + "\n")
    return path


def semicolons(ctr_data: Path, folder: Path) -> Path:
    return _csv(_frame(ctr_data), folder / "train.csv", sep=";")


def not_utf8(ctr_data: Path, folder: Path) -> Path:
    path = _csv(_frame(ctr_data).astype({"cat_0": str}), folder / "train.csv")
    lines = path.read_bytes().split(b"\n")
    fields = lines[30].split(b",")
    fields[2] = b"caf\xe9"
    lines[30] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    return path


def extra_field(ctr_data: Path, folder: Path) -> Path:
    path = _csv(_frame(ctr_data), folder / "train.csv")
    lines = path.read_text().split("\n")
    lines[20] += ",surplus"
    path.write_text("\n".join(lines))
    return path


def truncated_parquet(ctr_data: Path, folder: Path) -> Path:
    path = folder / "train.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(ctr_data), preserve_index=False), path)
    path.write_bytes(path.read_bytes()[:-200])
    return path


def string_numbers_in_parquet(ctr_data: Path, folder: Path) -> Path:
    frame = _frame(ctr_data).astype({"num_0": str})
    frame.loc[3, "num_0"] = "n/a"
    path = folder / "train.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def nothing_matches(ctr_data: Path, folder: Path) -> Path:
    return folder / "day=*" / "train-*.parquet"


def not_a_table(ctr_data: Path, folder: Path) -> Path:
    path = folder / "train.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    return path


# (what is wrong, the bad file, what the message must name besides the file)
CORPUS: list[tuple[str, Callable[[Path, Path], Path], tuple[str, ...]]] = [
    ("missing column", missing_column, ("num_0", "missing column")),
    ("text in a numeric column", text_in_a_number, ("num_0", "row 42", "forty")),
    ("infinity", infinity, ("num_0", "row 13", "inf")),
    ("NaN in parquet", nan_in_parquet, ("num_0", "row 100", "NaN")),
    ("label outside 0/1", label_outside_0_1, ("label", "row 6")),
    ("missing label", missing_label, ("label", "row 7")),
    ("empty file", empty_file, ("empty",)),
    ("header only", header_only, ("no data rows",)),
    ("semicolon-separated", semicolons, ("';'",)),
    ("not UTF-8", not_utf8, ("row 30", "UTF-8")),
    ("an extra field in a row", extra_field, ("row 20",)),
    ("truncated parquet", truncated_parquet, ()),
    ("strings in a parquet numeric column", string_numbers_in_parquet, ("num_0", "row 4")),
    ("a glob that matches nothing", nothing_matches, ("no file matches",)),
    ("not a parquet file", not_a_table, ()),
]


@pytest.mark.parametrize("case, make, named", CORPUS, ids=[case for case, _, _ in CORPUS])
def test_a_bad_training_file_fails_cleanly_and_keeps_the_run(case: str, make, named: tuple[str, ...], run_copy: Path, ctr_data: Path, tmp_path: Path, capsys) -> None:
    before = folder_digest(run_copy)
    bad_folder = tmp_path / "bad"
    bad_folder.mkdir()
    bad = make(ctr_data, bad_folder)
    data = {"train": str(bad), "valid": str(ctr_data / "valid.parquet"), "test": str(ctr_data / "test.parquet")}
    code = main(["train", str(write_config(tmp_path, ctr_data, data=data)), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: "), err
    shown = str(bad) if "*" in str(bad) else bad.name
    assert shown in message, f"{case}: the message does not name the file: {message}"
    for part in named:
        assert part.lower() in message.lower(), f"{case}: the message does not name {part!r}: {message}"
    assert folder_digest(run_copy) == before
    assert not (run_copy.parent / f".{run_copy.name}.partial").exists()
