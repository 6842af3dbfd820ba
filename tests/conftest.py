"""Shared pytest setup: Keras 2 before TensorFlow, quiet logs, seeds."""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The benchmarks' peak-memory helper reads the CPU allocator's statistics,
# kept only by TensorFlow's BFC CPU allocator (benchmarks/__init__.py).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hisac_tf  # noqa: E402,F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    tf.random.set_seed(0)
    yield
