"""One loaded SavedModel version and how a PredictRequest runs on it.

docs/design.md §6. `load_version` loads `<export_dir>/<version>/` with
`tf.saved_model.load` and keeps its signatures, their input specs (the
SavedModel's input contract) and the SignatureDefs for GetModelMetadata;
`run_predict` bounds a request by its declared shapes
(`serving.request_limits`, before any tensor is materialised), checks it
(`serving.request_checks`), runs it and refuses to answer OK with a
non-finite score.
"""

from __future__ import annotations

import dataclasses
import os

import grpc
import numpy as np

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving import request_checks, request_limits
from serving.request_checks import RequestError, clean_message
from serving.request_limits import RequestLimits

DEFAULT_SIGNATURE = "serving_default"

_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclasses.dataclass
class ModelVersion:
    """One loaded SavedModel version.

    Attributes:
      version: the integer directory name.
      path: the version directory.
      loaded: the object `tf.saved_model.load` returned (kept alive).
      signatures: signature name -> concrete function.
      input_specs: signature name -> {input name: tf.TensorSpec}.
      signature_defs: the SavedModel's SignatureDefs, for GetModelMetadata.
      max_history: the exported N (the SavedModel's `max_history`
        variable), None when the SavedModel has none.
      max_candidates: the exported C (its `max_candidates` variable),
        None when it has none.
    """

    version: int
    path: str
    loaded: object
    signatures: dict
    input_specs: dict
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    max_history: int | None = None
    max_candidates: int | None = None


def load_version(path: str, version: int) -> ModelVersion:
    """Loads `path` (one version directory) for serving."""
    loaded = tf.saved_model.load(path)
    signatures = dict(loaded.signatures)
    input_specs = {}
    for name, fn in signatures.items():
        args, kwargs = fn.structured_input_signature
        if args:
            raise ValueError(
                f"{path}: signature {name!r} takes positional inputs; "
                "serving signatures take named inputs only"
            )
        input_specs[name] = dict(kwargs)
    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    defs = get_model_metadata_pb2.SignatureDefMap()
    for graph in saved.meta_graphs:
        for name, sig in graph.signature_def.items():
            if name in signatures:
                defs.signature_def[name].CopyFrom(sig)
    sizes = [getattr(loaded, name, None)
             for name in ("max_history", "max_candidates")]
    sizes = [int(v.numpy()) if isinstance(v, tf.Variable) else None
             for v in sizes]
    return ModelVersion(version, path, loaded, signatures, input_specs, defs,
                        *sizes)


def run_predict(model: ModelVersion, request: predict_pb2.PredictRequest,
                max_message_bytes: int,
                limits: RequestLimits | None = None,
                is_active=None) -> predict_pb2.PredictResponse:
    """Runs one PredictRequest on a loaded version (or RequestError).

    Args:
      limits: the bounds on the declared shapes (default `RequestLimits()`).
      is_active: optional callable; False when the caller has gone (then
        the model is not run: CANCELLED).
    """
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if name not in model.signatures:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"signature {name!r} not found in version {model.version}; "
            f"signatures: {sorted(model.signatures)}",
        )
    specs = model.input_specs[name]
    missing = sorted(set(specs) - set(request.inputs))
    extra = sorted(set(request.inputs) - set(specs))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing inputs {missing}")
        if extra:
            parts.append(f"unexpected inputs {extra}")
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature {name!r}: {'; '.join(parts)}; expected "
            f"{sorted(specs)}",
        )
    request_limits.check_declared(request.inputs, limits or RequestLimits(),
                                  model.max_history, model.max_candidates)
    arrays = {
        key: request_checks.tensor_from_proto(
            key, request.inputs[key], specs[key], max_message_bytes)
        for key in sorted(specs)
    }
    request_checks.check_request(arrays)
    fn = model.signatures[name]
    outputs_wanted = list(request.output_filter)
    known = set(fn.structured_outputs)
    unknown = sorted(set(outputs_wanted) - known)
    if unknown:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {unknown} of signature "
            f"{name!r}; outputs: {sorted(known)}",
        )
    if is_active is not None and not is_active():
        raise RequestError(grpc.StatusCode.CANCELLED,
                           "the caller has gone; the model was not run")
    try:
        outputs = fn(**{k: tf.constant(v) for k, v in arrays.items()})
    except UnicodeDecodeError:
        # TF's own message quoted bytes that are not UTF-8 (a garbled
        # tf.Example): name the input and the first bad entry instead.
        raise _undecodable(fn, arrays) from None
    except tf.errors.OpError as e:
        code = _CODES.get(e.error_code, grpc.StatusCode.INTERNAL)
        raise RequestError(code, clean_message(e.message)) from None
    except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           clean_message(str(e))) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = model.version
    response.model_spec.signature_name = name
    for key in outputs_wanted or sorted(outputs):
        value = outputs[key].numpy()
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise RequestError(
                grpc.StatusCode.INTERNAL,
                f"output {key!r} of signature {name!r} holds a non-finite "
                f"value ({value[where]} at {list(where)}); not answered")
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def _undecodable(fn, arrays) -> RequestError:
    """INVALID_ARGUMENT naming the string input and entry the graph
    refused with a message that is not UTF-8 (each entry re-run alone)."""
    for key in sorted(arrays):
        value = arrays[key]
        if value.dtype.kind not in "OSU" or value.ndim != 1:
            continue
        for index in range(value.shape[0]):
            one = {k: (v[index:index + 1] if k == key else v)
                   for k, v in arrays.items()}
            try:
                fn(**{k: tf.constant(v) for k, v in one.items()})
            except (UnicodeDecodeError, tf.errors.OpError):
                head = bytes(value[index])[:16]
                return RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r}: entry {index} cannot be parsed (its "
                    f"bytes are not a valid serialized tf.Example; they "
                    f"start {head!r})")
    return RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"inputs {sorted(arrays)}: the graph refused them with a message "
        "that is not UTF-8")

