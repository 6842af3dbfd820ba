"""Checks of a written export before it is published.

docs/design.md §6. `verify` loads the SavedModel back in this process
and requires:

  * every signature of `hisac_tf.export.signatures` is there;
  * the saved `model_fingerprint` is the module's;
  * every warmup case runs, and the signatures that score give the
    trained model's scores (within `VERIFY_ATOL`): serving_default,
    score_with_state on encode_user's state and predict_examples agree;
  * the graph holds no tensorflow-io op (TF Serving has none).
"""

from __future__ import annotations

import os

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from hisac_tf.export import signatures as sig

VERIFY_ATOL = 1e-5


class ExportError(RuntimeError):
    """An export that failed its checks; no version was published."""


def graph_ops(saved_model_dir: str) -> list[str]:
    """Sorted op types of the SavedModel's graph and function library."""
    with tf.io.gfile.GFile(
        os.path.join(saved_model_dir, "saved_model.pb"), "rb"
    ) as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    ops = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return sorted(ops)


def verify(path: str, cases, fingerprint: int) -> None:
    """Loads the export back and runs every warmup case through it.

    Args:
      path: the written SavedModel directory.
      cases: `hisac_tf.export.warmup.warmup_cases`: (signature, inputs,
        expected ctr or None).
      fingerprint: the `ServingModule.fingerprint` it must carry.
    Raises:
      ExportError: a signature is missing, fails, or scores differently
        from the trained model; or the graph holds tensorflow-io ops.
    """
    loaded = tf.saved_model.load(path)
    missing = set(sig.SIGNATURE_NAMES) - set(loaded.signatures)
    if missing:
        raise ExportError(f"signatures {sorted(missing)} are missing")
    saved = getattr(loaded, sig.FINGERPRINT, None)
    if saved is None or int(saved.numpy()) != fingerprint:
        raise ExportError(
            f"the saved {sig.FINGERPRINT} is not {fingerprint}: {saved}")
    for signature, inputs, expected in cases:
        out = loaded.signatures[signature](
            **{k: tf.constant(v) for k, v in inputs.items()})
        if expected is None:
            continue
        got = out[sig.CTR].numpy()
        if got.shape != expected.shape:
            raise ExportError(
                f"{signature} gives scores of shape {got.shape}, the "
                f"trained model {expected.shape}")
        if not np.allclose(got, expected, atol=VERIFY_ATOL, rtol=0):
            raise ExportError(
                f"{signature} scores differ from the trained model's "
                f"(max |diff| {np.max(np.abs(got - expected)):.3g} > "
                f"{VERIFY_ATOL})")
    bad = [op for op in graph_ops(path) if op.startswith("IO>")]
    if bad:
        raise ExportError(f"tensorflow-io ops in the graph: {bad}")
