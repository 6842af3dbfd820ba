"""The warmup requests of an export: `assets.extra/tf_serving_warmup_requests`.

docs/design.md §6. TF Serving replays a version's warmup file (a TFRecord
file of `PredictionLog`s) before that version answers, so that the first
real requests do not pay for graph optimisation. The requests are built
from a batch of real eval records; each carries the scores the trained
model gives it, so that the export's verification
(`hisac_tf.export.verification`) checks every signature against them.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from hisac_tf.data.request_values import impression_examples
from hisac_tf.export import signatures as sig

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_BATCH = 4  # Requests per warmup batch (also one of a single one).


def warmup_cases(module: sig.ServingModule, batch: dict) -> list[tuple]:
    """(signature, inputs as numpy, expected ctr or None) for the warmup.

    For R = 1 and R = len(batch): serving_default, encode_user,
    score_with_state (on that state) and predict_examples (one example
    per impression). Expected scores are `sigmoid(model(batch))`.

    Args:
      module: the `ServingModule` being exported.
      batch: padded model inputs of R real requests (tensors).
    Returns:
      the cases; expected ctr is [R', C] (0.0 past cand_count) for the
      request-level signatures, [B] for predict_examples, None for
      encode_user.
    """
    spec, model = module.spec, module.model
    np_batch = {k: v.numpy() for k, v in batch.items()}
    probs = tf.sigmoid(tf.cast(model(batch, training=False), tf.float32))
    counts = np_batch["cand_count"]  # [R]
    valid = np.arange(probs.shape[1])[None, :] < counts[:, None]  # [R, C]
    expected = np.where(valid, probs.numpy(), 0.0)  # [R, C]
    names = tuple(module.serving_default.input_signature[0])
    cases = []
    for rows in sorted({1, len(counts)}):
        request = {k: np_batch[k][:rows] for k in names}
        user = {k: request[k] for k in module.user_input_names}
        state = {
            k: v.numpy() for k, v in module.encode_user(user).items()
        }
        cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
        examples = np.array(
            sum(impression_examples(request, spec), []), dtype=object)
        cases += [
            (sig.SERVING_DEFAULT, request, expected[:rows]),
            (sig.ENCODE_USER, user, None),
            (sig.SCORE_WITH_STATE, {**state, **cands}, expected[:rows]),
            (sig.PREDICT_EXAMPLES, {sig.EXAMPLES: examples},
             expected[:rows][valid[:rows]]),
        ]
    return cases


def prediction_log(model_name: str, signature: str, inputs: dict):
    """One PredictionLog holding a PredictRequest."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(path: str, model_name: str, cases) -> int:
    """Writes the cases' requests to `path`; returns how many."""
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs, _ in cases:
            writer.write(prediction_log(
                model_name, signature, inputs).SerializeToString())
    return len(cases)


def read_warmup(path: str) -> list:
    """The PredictionLog records of a warmup file."""
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
