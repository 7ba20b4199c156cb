"""Resume under DDP: two ranks interrupted after epoch 1 and resumed equal an uninterrupted run."""

import pytest
import torch

from ddp_workers import resume_and_save, spawn, train_and_save, write_config


@pytest.mark.slow
def test_resumed_ddp_run_reaches_the_uninterrupted_weights(tmp_path):
    whole = write_config(tmp_path / "whole", trainer={"epochs": 2})
    spawn(train_and_save, str(whole), str(tmp_path / "whole"))
    expected = torch.load(tmp_path / "whole" / "rank0.pt")["state"]

    first_epoch = write_config(tmp_path / "parts", trainer={"epochs": 1})  # the "interrupted" run
    spawn(train_and_save, str(first_epoch), str(tmp_path / "parts"))
    both_epochs = write_config(tmp_path / "parts", trainer={"epochs": 2})  # same run folder
    spawn(resume_and_save, str(both_epochs), str(tmp_path / "parts"))
    resumed = [torch.load(tmp_path / "parts" / f"rank{rank}.pt") for rank in range(2)]

    assert resumed[0]["metrics"]["epochs_run"] == 2
    for name, value in expected.items():
        torch.testing.assert_close(resumed[0]["state"][name], value, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(resumed[1]["state"][name], value, rtol=0, atol=1e-6, msg=name)
