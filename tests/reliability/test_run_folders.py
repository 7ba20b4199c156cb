"""A failed or refused `recstack train` never damages the previous run; outputs never land on a
run's own files; run names stay inside runs/."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recstack.cli import main

from .conftest import folder_digest, write_config


def partial_of(run: Path) -> Path:
    return run.parent / f".{run.name}.partial"


def test_an_unknown_model_leaves_the_previous_run_byte_identical(run_copy: Path, ctr_data: Path, capsys) -> None:
    before = folder_digest(run_copy)
    config = write_config(run_copy.parent.parent, ctr_data, model={"name": "deepfmm"})
    assert main(["train", str(config), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "deepfmm" in err and "did you mean 'deepfm'" in err
    assert "Traceback" not in err
    assert folder_digest(run_copy) == before
    assert not partial_of(run_copy).exists()


def test_a_missing_column_in_the_test_file_fails_before_training_and_changes_nothing(run_copy: Path, ctr_data: Path, tmp_path: Path, capsys) -> None:
    before = folder_digest(run_copy)
    broken = tmp_path / "test_without_num.parquet"
    pq.write_table(pq.read_table(ctr_data / "test.parquet").drop(["num_0"]), broken)
    data = {"train": str(ctr_data / "train.parquet"), "valid": str(ctr_data / "valid.parquet"), "test": str(broken)}
    assert main(["train", str(write_config(tmp_path, ctr_data, data=data)), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "test_without_num.parquet" in err and "num_0" in err and "missing column" in err
    assert folder_digest(run_copy) == before
    assert not partial_of(run_copy).exists()


def test_a_bad_value_found_during_training_keeps_the_previous_run(run_copy: Path, ctr_data: Path, tmp_path: Path, capsys) -> None:
    before = folder_digest(run_copy)
    valid = pq.read_table(ctr_data / "valid.parquet").to_pandas()
    valid["num_0"] = valid["num_0"].astype(str)
    valid.loc[7, "num_0"] = "seven"
    bad_valid = tmp_path / "valid_bad.csv"
    valid.to_csv(bad_valid, index=False)
    data = {"train": str(ctr_data / "train.parquet"), "valid": str(bad_valid), "test": str(ctr_data / "test.parquet")}
    assert main(["train", str(write_config(tmp_path, ctr_data, data=data)), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "valid_bad.csv" in err and "row 8" in err and "num_0" in err
    assert folder_digest(run_copy) == before


def test_an_existing_run_is_replaced_only_with_overwrite(run_copy: Path, ctr_data: Path, capsys) -> None:
    before = folder_digest(run_copy)
    config = write_config(run_copy.parent.parent, ctr_data, trainer={"epochs": 1, "lr": 0.01, "progress": False})
    assert main(["train", str(config)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert folder_digest(run_copy) == before
    assert main(["train", str(config), "--overwrite", "--json"]) == 0
    assert folder_digest(run_copy) != before
    assert not partial_of(run_copy).exists()
    assert not list(run_copy.parent.glob(".rel.replaced-*"))


def test_the_refusal_message_names_the_folder_and_the_way_out(run_copy: Path, ctr_data: Path, capsys) -> None:
    config = write_config(run_copy.parent.parent, ctr_data)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(run_copy) in err and "--overwrite" in err


def test_an_interrupted_run_is_not_started_over_without_overwrite(run_copy: Path, ctr_data: Path, capsys) -> None:
    partial = partial_of(run_copy)
    (partial / "checkpoints").mkdir(parents=True)
    (run_copy / "checkpoints" / "last.pt").rename(partial / "checkpoints" / "last.pt")
    config = write_config(run_copy.parent.parent, ctr_data)
    assert main(["train", str(config), "--overwrite"]) == 0  # --overwrite starts over
    (partial / "checkpoints").mkdir(parents=True)
    (partial / "checkpoints" / "last.pt").write_bytes((run_copy / "checkpoints" / "last.pt").read_bytes())
    run_copy.rename(run_copy.with_name("elsewhere"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "interrupted run" in err and "--resume" in err


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", ".."])
def test_a_run_name_must_be_one_plain_folder_name(tmp_path: Path, ctr_data: Path, name: str, capsys) -> None:
    config = write_config(tmp_path, ctr_data, name=name)
    text = config.read_text().replace(f"output: {tmp_path / 'runs' / 'rel'}\n", "")
    config.write_text(text)
    assert main(["train", str(config)]) == 2
    assert "name:" in capsys.readouterr().err
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("inside", ["model.pt", "preprocessor.json", "checkpoints/scores.csv", "new.csv"])
def test_predict_refuses_an_output_inside_a_run_folder(run_copy: Path, ctr_data: Path, inside: str, capsys) -> None:
    before = folder_digest(run_copy)
    target = run_copy / inside
    code = main(["predict", str(run_copy), "--data", str(ctr_data / "test.parquet"), "--output", str(target)])
    assert code == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert folder_digest(run_copy) == before


def test_predict_writes_elsewhere_and_prints_a_summary(run_copy: Path, ctr_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.csv"
    assert main(["predict", str(run_copy), "--data", str(ctr_data / "test.parquet"), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 400 scores to {out}"
    assert len(out.read_text().splitlines()) == 401


def test_an_existing_empty_folder_may_receive_a_run(tmp_path: Path, ctr_data: Path) -> None:
    (tmp_path / "runs" / "rel").mkdir(parents=True)
    assert main(["train", str(write_config(tmp_path, ctr_data, trainer={"epochs": 1, "progress": False}))]) == 0
    assert (tmp_path / "runs" / "rel" / "model.pt").is_file()
