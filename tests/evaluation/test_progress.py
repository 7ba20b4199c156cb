"""The evaluation pass gets a progress bar in rows: with the total and ETA when the source knows its
row count (Parquet), silent when stderr is not a terminal or the trainer's progress is off."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recstack.config import RunConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.evaluation.progress import progress_batches
from recstack.schema import Schema
from recstack.tasks import BinaryClassificationTask
from recstack.workflows.tasks import evaluate_source, make_evaluator

SCHEMA = {"label": "label", "features": [{"name": "item", "kind": "categorical"}, {"name": "x", "kind": "numeric"}]}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class ReadsX(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, batch):
        return self.linear(batch.dense["x"].reshape(-1, 1)).squeeze(-1)  # (B,)


@pytest.fixture
def valid(tmp_path):
    ids = np.arange(300)
    path = tmp_path / "valid.parquet"
    pq.write_table(pa.table({"item": ids % 7, "x": (ids % 5).astype(float), "label": ids % 2}), path)
    csv = tmp_path / "valid.csv"
    csv.write_text("item,x,label\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in ids))
    parquet_source, csv_source = DataSource(paths=(str(path),)), DataSource(paths=(str(csv),))
    return parquet_source, csv_source, Preprocessor(Schema.from_dict(SCHEMA)).fit(parquet_source)


def test_evaluation_bar_counts_rows_toward_the_parquet_total(valid, monkeypatch):
    source, _, pre = valid
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    metrics = evaluate_source(ReadsX(), BinaryClassificationTask(), pre, source, desc="evaluate valid")
    assert metrics["count"] == 300
    drawn = terminal.getvalue()
    # drawn at the start (the pass is too quick for a redraw; the bar is cleared when done)
    assert "evaluate valid" in drawn and re.search(r"/300 \[", drawn) and "row/s" in drawn


def test_evaluation_bar_of_a_csv_source_counts_rows_without_a_total(valid, monkeypatch):
    _, source, pre = valid
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate_source(ReadsX(), BinaryClassificationTask(), pre, source)
    drawn = terminal.getvalue()
    assert re.search(r"evaluate: [\d.]+row \[", drawn) and not re.search(r"/\d+ \[", drawn)


def test_evaluation_bar_is_off_when_progress_is_off_or_not_a_terminal(valid, monkeypatch, capsys):
    source, _, pre = valid
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate_source(ReadsX(), BinaryClassificationTask(), pre, source, progress=False)
    assert terminal.getvalue() == ""
    monkeypatch.undo()
    evaluate_source(ReadsX(), BinaryClassificationTask(), pre, source)  # stderr captured: no TTY
    assert capsys.readouterr().err == ""


def test_make_evaluator_follows_the_trainer_progress_option(valid, tmp_path, monkeypatch):
    source, _, pre = valid
    task = BinaryClassificationTask()
    for progress, shown in ((True, True), (False, False)):
        config = RunConfig.from_dict(
            {
                "data": {"train": source.paths[0], "valid": source.paths[0]},
                "schema": SCHEMA,
                "task": {"type": "binary"},
                "model": {"name": "lr"},
                "trainer": {"progress": progress},
                "output": str(tmp_path / "run"),
            },
            base_dir=tmp_path,
        )
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        make_evaluator(config, task, pre, split="valid")(ReadsX())
        assert ("evaluate valid" in terminal.getvalue()) is shown


def test_progress_batches_yields_every_batch_unchanged():
    batches = [torch.arange(n) for n in (4, 4, 2)]
    terminal = Terminal()
    out = list(progress_batches(batches, total_rows=10, desc="evaluate", file=terminal))
    assert out == batches
    assert re.search(r"/10.0 \[", terminal.getvalue())


@pytest.fixture(scope="module")
def tiny_retrieval(tmp_path_factory):
    """A one-epoch two-tower run on the serving tests' tiny MovieLens data, and its config."""
    from recstack.export.run_folder import load_run
    from recstack.workflows.train import train_run
    from tests.serving.tiny_runs import ROOT, write_tiny_data

    root = tmp_path_factory.mktemp("retrieval_bar")
    data = write_tiny_data(root / "data")
    spec = {
        "data": {"train": str(data / "retrieval_train.parquet"), "valid": str(data / "retrieval_valid.parquet"), "catalog": str(data / "items.parquet"), "seen": str(data / "seen.parquet")},
        "schema": str(ROOT / "schemas/movielens_retrieval.yaml"),
        "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
        "model": {"name": "dssm", "params": {"hidden_dims": [16, 8], "output_activation": "identity"}},
        "loader": {"batch_size": 64},
        "trainer": {"epochs": 1, "monitor": "recall@10", "progress": False},
        "evaluation": {"ks": [10]},
        "output": str(root / "run"),
    }
    train_run(RunConfig.from_dict(spec), log=lambda message: None)
    return load_run(root / "run"), spec


def test_retrieval_evaluation_bar_counts_the_users_evaluated(tiny_retrieval, tmp_path, monkeypatch):
    from recstack.workflows.retrieval import make_retrieval_evaluator

    run, spec = tiny_retrieval
    for progress, shown in ((True, True), (False, False)):
        config = RunConfig.from_dict({**spec, "trainer": {**spec["trainer"], "progress": progress}})
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        metrics = make_retrieval_evaluator(config, run.preprocessor, split="valid")(run.model)
        drawn = terminal.getvalue()
        assert metrics["users"] == pq.read_metadata(spec["data"]["valid"]).num_rows  # every held-out row
        if shown:  # drawn at the start with the users evaluated as its total (cleared when done)
            assert "evaluate valid" in drawn and re.search(rf"/{int(metrics['users'])}(\.0)? \[", drawn) and "user/s" in drawn
        else:
            assert drawn == ""
