"""Requests from request-level TFRecord files, for the serving client.

The first requests of a training-format file (docs/design.md §4), parsed,
checked and padded by the training input pipeline, as model inputs; and
`load_request`, which reads a .json request file
(`serving.request_loading`) or such a TFRecord file. Kept apart from
`serving.request_loading` because it needs the input pipeline and the
data config's `FeatureSpec` (the records' layout); JSON requests need
neither.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np

from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import FeatureSpec
from serving.request_loading import request_from_json


def requests_from_tfrecord(path: str, spec: FeatureSpec,
                           max_requests: int = 1,
                           compression: str | None = None
                           ) -> dict[str, np.ndarray]:
    """The first `max_requests` requests of a request-level TFRecord file,
    parsed, checked and padded by the training input pipeline (model
    inputs only: no labels).

    Raises:
      ValueError: the file holds no request.
    """
    if compression is None:
        compression = "GZIP" if path.endswith(".gz") else ""
    ds = input_pipeline.request_dataset(
        path, spec, max_requests, compression=compression,
        deterministic=True, num_parallel_reads=1,
    )
    for batch in ds.take(1):
        names = spec.input_signature()
        return {k: v.numpy() for k, v in batch.items() if k in names}
    raise ValueError(f"{path} holds no request")


def load_request(path: str, schema, max_requests: int = 1,
                 spec: FeatureSpec | None = None) -> dict[str, np.ndarray]:
    """Model inputs from a .json request file or a request-level TFRecord.

    Args:
      path: the file.
      schema: the served model's `ModelSchema` (or a `FeatureSpec`), for
        JSON files.
      max_requests: requests read from a TFRecord file.
      spec: the `FeatureSpec` of the TFRecord file's records (default:
        `schema`, when it is one).
    Raises:
      ValueError: a TFRecord file without a FeatureSpec, or the errors of
        `request_from_json` and `requests_from_tfrecord`.
    """
    if path.endswith(".json"):
        return request_from_json(path, schema)
    spec = spec if spec is not None else schema
    if not isinstance(spec, FeatureSpec):
        raise ValueError(
            f"{path}: reading a request-level TFRecord needs the data "
            "config's FeatureSpec (the records' layout); give spec= or a "
            ".json request")
    return requests_from_tfrecord(path, spec, max_requests)
