import pytest
import torch

# Two cores are shared by every suite: one torch thread keeps these tests fast and quiet.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
