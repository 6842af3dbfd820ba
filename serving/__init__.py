"""Serving: signatures, TF Serving configs, gRPC client, local server."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
