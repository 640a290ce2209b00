import os

import numpy as np
import pytest
import torch

# Small in-process tensors: one thread avoids OpenMP overhead (and oversubscription when
# subprocess tests or other jobs share the two cores).
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def device():
    """CPU unless REID_TEST_DEVICE names another (e.g. cuda)."""
    return torch.device(os.environ.get("REID_TEST_DEVICE", "cpu"))
