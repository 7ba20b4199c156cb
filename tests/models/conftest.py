import pytest
import torch

# The test machine's cores are shared: one thread keeps every test file fast and quiet.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
