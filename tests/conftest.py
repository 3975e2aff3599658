"""Shared test setup: quiet TensorFlow, deterministic seeds, the project root on sys.path."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras
    import numpy as np
    import torch

    keras.backend.clear_session(
        free_memory=False
    )  # fresh layer-name counters: names in tests are predictable
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
