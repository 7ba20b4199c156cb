import pytest
import torch

from recstack.data.feature_map import FeatureMap

from .helpers import rich_feature_map

# The test machine's cores are shared: one thread keeps every test file fast and quiet.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def feature_map() -> FeatureMap:
    return rich_feature_map()
