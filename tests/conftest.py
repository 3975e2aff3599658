"""Shared test setup: quiet TensorFlow, deterministic seeds, the project root on sys.path."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns oneDNN on by itself only on some x86 CPUs (Intel's); without it, its CPU
# kernels refuse channels_first convolutions (Conv2D "only supports NHWC on the CPU"), which the
# tests run in Keras as the reference. On, every machine computes the reference the same way.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _frozen_heap():
    """Move the long-lived TF/Keras/torch objects out of the GC's reach: clear_session() between
    tests then collects only what a test made (0.9 s less a test on these machines)."""
    import gc

    import keras  # noqa: F401
    import torch  # noqa: F401

    gc.collect()
    gc.freeze()


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


@pytest.fixture
def restore_registry():
    """Converters a test registers are removed afterwards (the registry is process-wide)."""
    import kerastorch_magic.converters  # noqa: F401  (the built-in entries exist before saving)
    from kerastorch_magic import registry

    saved = {kind: dict(table) for kind, table in registry._TABLES.items()}
    yield
    for kind, table in registry._TABLES.items():
        table.clear()
        table.update(saved[kind])
