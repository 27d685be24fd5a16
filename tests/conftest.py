"""Shared test setup.

8 simulated CPU devices for sharding tests.  torchvision must be imported before
tensorflow: the other order segfaults with these wheels (torchvision 0.29.1 and
tensorflow-cpu 2.21), and open_clip imports torchvision.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import torchvision  # noqa: F401  (import order, see above)
except ImportError:
    pass

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.RandomState(0)
