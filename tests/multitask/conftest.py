import pytest
import torch

torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
