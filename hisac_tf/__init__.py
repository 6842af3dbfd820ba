"""hisac_tf: HiSAC (Hierarchical Sparse Activation Compression) for TF/Keras.

Importing this package arranges Keras 2 (`tf-keras`) for TensorFlow, which
tensorflow-recommenders 0.7.7 needs: `TF_USE_LEGACY_KERAS=1` must be set
before TensorFlow is first imported, so import `hisac_tf` (or `pipelines`,
`serving`) before `tensorflow`.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ log level: 3 (errors hidden) on a machine without an
# NVIDIA device, where TF 2.17 prints "Unable to register cuFFT/cuDNN/cuBLAS
# factory" lines on every import; 2 (errors shown) where a GPU may be used.
# Set TF_CPP_MIN_LOG_LEVEL yourself to choose (0 shows everything).
_os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "2" if _os.path.exists("/dev/nvidia0") else "3")

if "tensorflow" in _sys.modules and _os.environ["TF_USE_LEGACY_KERAS"] != "1":
    raise ImportError(
        "hisac_tf needs Keras 2: TF_USE_LEGACY_KERAS is "
        f"{_os.environ['TF_USE_LEGACY_KERAS']!r}; set it to '1' (or unset "
        "it) and import hisac_tf before tensorflow"
    )
