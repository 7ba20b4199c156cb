"""DDP training: identical ranks, and the same model as one process with the batch doubled."""

import json
import subprocess
import sys

import pytest
import torch

from ddp_workers import spawn, train_and_save, write_config

# 2 ranks x batch 100 with row groups of 100 in file order: global step s of the DDP run holds
# rows [200 s, 200 s + 200), exactly batch s of one process with batch 200, and DDP averages the
# two ranks' mean gradients = the mean gradient over those 200 rows. The runs differ only in the
# order float32 sums are taken (two halves, then the average): about 1e-7 relative per step,
# grown by 20 Adam steps to at most ~1e-5 on the weights here; 1e-4 leaves a margin of 10.
TOLERANCE = 1e-4


@pytest.mark.slow
def test_ddp_matches_one_process_with_double_batch(tmp_path):
    ddp_config = write_config(tmp_path / "ddp")
    spawn(train_and_save, str(ddp_config), str(tmp_path / "ddp"))
    ranks = [torch.load(tmp_path / "ddp" / f"rank{rank}.pt") for rank in range(2)]

    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), f"{name} differs across ranks"
    assert ranks[0]["metrics"]["valid"] == ranks[1]["metrics"]["valid"]
    assert ranks[0]["metrics"]["train_samples"] == 2 * 2000  # 2 epochs, padding not counted

    # one process (this one), batch 200, from the same seeded initial weights
    single_config = write_config(tmp_path / "single", loader={"batch_size": 200})
    train_and_save(0, str(single_config), str(tmp_path / "single"))
    single = torch.load(tmp_path / "single" / "rank0.pt")["state"]
    for name, value in ranks[0]["state"].items():
        torch.testing.assert_close(value, single[name], rtol=TOLERANCE, atol=TOLERANCE, msg=name)


@pytest.mark.slow
def test_cli_nproc_2_writes_one_run_folder(tmp_path):
    config = write_config(tmp_path, trainer={"epochs": 1})
    result = subprocess.run(
        [sys.executable, "-m", "recstack.cli", "train", str(config), "--nproc", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["valid"]["count"] == 600
    assert any((tmp_path / "run").rglob("last.pt"))  # rank 0's checkpoint
    assert result.stdout.count("run folder:") == 1  # the summary: rank 0's only


@pytest.mark.slow
@pytest.mark.parametrize(
    "weighting, key",
    [("uncertainty", "task_uncertainty.log_variance"), ("gradnorm", "task_gradnorm.weights"), ("metabalance", "task_metabalance.norms")],
)
def test_ddp_trains_learned_task_weights_identically_on_every_rank(tmp_path, weighting, key):
    """Learned task weights (uncertainty, GradNorm) live in the model, so DDP averages their
    gradients like any weight's: both ranks end with the same, trained values. MetaBalance's
    rescaled gradient is an ordinary gradient to DDP: every weight ends equal on both ranks."""
    from ddp_workers import write_multitask_config, write_multitask_data

    config = write_multitask_config(tmp_path, write_multitask_data(tmp_path / "data", 1200), weighting=weighting)
    spawn(train_and_save, str(config), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{rank}.pt")["state"] for rank in range(2)]
    learned = ranks[0][key]
    for name, value in ranks[0].items():  # every weight equal on both ranks
        assert name == key or torch.equal(value, ranks[1][name]), name
    if weighting == "metabalance":  # each rank averages its own norms (rank 0's broadcast before each step)
        assert bool((learned > 0).any()) and bool((ranks[1][key] > 0).any())
        return
    assert torch.equal(learned, ranks[1][key])
    start = 0.0 if weighting == "uncertainty" else 1.0
    assert bool((learned != start).all())  # trained away from the start on both targets
