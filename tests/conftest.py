import os

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def device():
    """CPU unless REID_TEST_DEVICE names another (e.g. cuda)."""
    return torch.device(os.environ.get("REID_TEST_DEVICE", "cpu"))
