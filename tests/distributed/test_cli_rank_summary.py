"""``recstack train --nproc N``: every worker runs the CLI's train command; only rank 0 prints."""

from __future__ import annotations

import pytest

from ddp_workers import write_config

METRICS = {"valid": {"auc": 0.7}, "best_epoch": 1, "epochs_run": 1, "stopped_early": False, "train_seconds": 1.0}


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_only_rank_0_prints_the_train_summary(tmp_path, monkeypatch, capsys, rank, printed):
    import recstack.workflows.train as train
    from recstack.cli import main

    config = write_config(tmp_path, train_rows=100, valid_rows=100)
    monkeypatch.setattr(train, "train_run", lambda *a, **k: METRICS)  # the worker's training, done
    monkeypatch.setenv("RANK", rank)
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert ("run folder:" in out) is printed and ("auc" in out) is printed


def test_the_summary_of_a_run_that_did_not_gather_names_its_item_index(tmp_path, monkeypatch, capsys):
    import recstack.workflows.train as train
    from recstack.cli import main

    config = write_config(tmp_path, train_rows=100, valid_rows=100)
    not_gathered = {k: v for k, v in METRICS.items() if k != "valid"} | {"item_index": {"backend": "faiss", "items": 300, "indexed": 300}}
    monkeypatch.setattr(train, "train_run", lambda *a, **k: not_gathered)
    monkeypatch.delenv("RANK", raising=False)
    assert main(["train", str(config)]) == 0
    assert "item index: 300 item vectors written shard by shard (faiss), tables not gathered: no model.pt" in capsys.readouterr().out
