"""Bad numbers through the CLI: NaN/inf feature values, labels outside {0, 1} and lists longer
than maxlen. Each bad input exits 2 with one line naming the file, the row and the column (no
traceback), `predict` never writes a NaN score, and `recstack data` reports what it filled,
skipped or truncated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from recstack.cli import main

from .conftest import SCHEMA, folder_digest, write_config


def with_values(source: Path, target: Path, column: str, rows: dict[int, float]) -> Path:
    """``source`` (Parquet) with ``column`` set at 0-based ``rows``, written as CSV or Parquet."""
    table = pq.read_table(source)
    values = table.column(column).to_numpy().astype(np.float64)
    for row, value in rows.items():
        values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    if target.suffix == ".csv":  # CSV holds no list columns: keep the scalar ones
        scalar = [f.name for f in table.schema if not pa.types.is_list(f.type)]
        pacsv.write_csv(table.select(scalar), target)
    else:
        pq.write_table(table, target)
    return target


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *parts: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


def schema_file(folder: Path, **feature_options) -> Path:
    schema = {**SCHEMA, "features": [dict(f, **feature_options.get(f["name"], {})) for f in SCHEMA["features"]]}
    path = folder / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    return path


@pytest.mark.parametrize("value, kind", [(np.inf, "inf"), (-np.inf, "-inf"), (np.nan, "NaN")])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_data_rejects_a_non_finite_value_naming_file_row_and_column(tmp_path, ctr_data, capsys, value, kind, suffix):
    bad = with_values(ctr_data / "test.parquet", tmp_path / f"bad{suffix}", "num_0", {6: value})
    code, _, err = run_cli(["data", str(schema_file(tmp_path)), "--data", str(bad)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 7", "'num_0'", f"{kind} value")


def test_data_reports_filled_and_skipped_values(tmp_path, ctr_data, capsys):
    bad = with_values(ctr_data / "test.parquet", tmp_path / "bad.parquet", "num_0", {0: np.inf, 3: np.nan})
    schema = schema_file(tmp_path, num_0={"on_invalid": "fill"})
    code, out, _ = run_cli(["data", str(schema), "--data", str(bad)], capsys)
    assert code == 0 and "rows: 400" in out and "NaN/inf: 2 values filled" in out
    schema = schema_file(tmp_path, num_0={"on_invalid": "skip_row"})
    code, out, _ = run_cli(["data", str(schema), "--data", str(bad)], capsys)
    assert code == 0 and "rows: 398 (skipped rows: 2)" in out and "NaN/inf: 2 rows skipped" in out


@pytest.mark.parametrize("value, found", [(2.0, "2.0"), (np.nan, "NaN"), (-1.0, "-1.0")])
def test_data_rejects_a_label_outside_0_1(tmp_path, ctr_data, capsys, value, found):
    bad = with_values(ctr_data / "test.parquet", tmp_path / "bad.parquet", "label", {9: value})
    code, _, err = run_cli(["data", str(schema_file(tmp_path)), "--data", str(bad)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 10", "'label'", f"the label is {found}", "expected 0 or 1")


def test_data_shows_truncated_rows_per_sequence_feature(tmp_path, ctr_data, capsys):
    table = pq.read_table(ctr_data / "test.parquet")
    lengths = pa.compute.list_value_length(table.column("hist_item_ids")).to_numpy()
    expected = int((lengths > 3).sum())
    assert expected > 0
    schema = {**SCHEMA, "features": [*SCHEMA["features"], {"name": "hist_item_ids", "kind": "sequence", "maxlen": 3}]}
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    with pytest.warns(UserWarning, match=f"'hist_item_ids'.*{expected} row"):
        code, out, _ = run_cli(["data", str(tmp_path / "schema.yaml"), "--data", str(ctr_data / "test.parquet")], capsys)
    assert code == 0
    assert f"truncated to maxlen 3 (keeping recent): {expected} rows" in out


def test_train_stops_before_training_on_inf_and_leaves_no_run(tmp_path, ctr_data, capsys):
    bad = with_values(ctr_data / "train.parquet", tmp_path / "train.parquet", "num_0", {41: np.inf})
    config = write_config(tmp_path, ctr_data, data={"train": str(bad), "valid": str(ctr_data / "valid.parquet")})
    code, _, err = run_cli(["train", str(config)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 42", "'num_0'", "inf value")
    assert not (tmp_path / "runs" / "rel" / "model.pt").exists()


def test_train_rejects_labels_outside_0_1(tmp_path, ctr_data, capsys):
    bad = with_values(ctr_data / "train.parquet", tmp_path / "train.parquet", "label", {4: 3.0})
    config = write_config(tmp_path, ctr_data, data={"train": str(bad), "valid": str(ctr_data / "valid.parquet")})
    code, _, err = run_cli(["train", str(config)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 5", "'label'", "the label is 3.0")


def test_predict_refuses_nan_inputs_and_writes_nothing(run_copy, tmp_path, ctr_data, capsys):
    bad = with_values(ctr_data / "test.parquet", tmp_path / "bad.csv", "num_0", {99: np.nan})
    before = folder_digest(run_copy)
    output = tmp_path / "scores.csv"
    code, _, err = run_cli(["predict", str(run_copy), "--data", str(bad), "--output", str(output)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 100", "'num_0'", "NaN value")
    assert not output.exists() and folder_digest(run_copy) == before


def test_predict_never_writes_a_nan_score(run_copy, tmp_path, ctr_data, capsys):
    weights = run_copy / "model.pt"
    state = torch.load(weights, weights_only=True)
    first = next(name for name, tensor in state.items() if tensor.is_floating_point() and tensor.numel() > 1)
    state[first] = torch.full_like(state[first], float("nan"))  # a model that yields NaN for every row
    torch.save(state, weights)
    output = tmp_path / "scores.csv"
    output.write_text("score\n0.5\n")
    code, _, err = run_cli(["predict", str(run_copy), "--data", str(ctr_data / "test.parquet"), "--output", str(output)], capsys)
    assert code == 2
    assert_one_line_error(err, "scores", "not numbers", "nothing was written")
    assert output.read_text() == "score\n0.5\n"  # the previous output is intact


def test_predict_writes_finite_scores_on_good_data(run_copy, tmp_path, ctr_data, capsys):
    output = tmp_path / "scores.parquet"
    code, out, _ = run_cli(["predict", str(run_copy), "--data", str(ctr_data / "test.parquet"), "--output", str(output)], capsys)
    assert code == 0 and "wrote 400 scores" in out
    scores = pq.read_table(output).column("score").to_numpy()
    assert len(scores) == 400 and np.isfinite(scores).all()


def test_predict_does_not_read_labels(run_copy, tmp_path, ctr_data, capsys):
    odd = with_values(ctr_data / "test.parquet", tmp_path / "odd.parquet", "label", {0: 7.0})
    output = tmp_path / "scores.csv"
    code, out, _ = run_cli(["predict", str(run_copy), "--data", str(odd), "--output", str(output)], capsys)
    assert code == 0 and "wrote 400 scores" in out


def test_evaluate_rejects_labels_outside_0_1_naming_the_row(run_copy, tmp_path, ctr_data, capsys):
    bad = with_values(ctr_data / "test.parquet", tmp_path / "bad.parquet", "label", {11: 0.5})
    code, _, err = run_cli(["evaluate", str(run_copy), "--data", str(bad)], capsys)
    assert code == 2
    assert_one_line_error(err, str(bad), "row 12", "'label'", "the label is 0.5")
