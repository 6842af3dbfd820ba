"""A local gRPC server with TF Serving's API over hisac SavedModels.

Stock TensorFlow Serving cannot be installed everywhere (docs/design.md §6), so
this module serves the same `PredictionService` (Predict, GetModelMetadata)
and `ModelService` (GetModelStatus) over `<export_dir>/<version>/`
SavedModels loaded with `tf.saved_model.load`, for development and tests:

    export_dir/1/saved_model.pb ─┐  poll every poll_s  ┌─ Predict
    export_dir/2/saved_model.pb ─┼─ ModelRegistry ─────┼─ GetModelMetadata
    [models.config: labels]  ────┘  (versions, labels) └─ GetModelStatus

Versions: integer-named directories holding `saved_model.pb` (the export
writes them atomically by rename). The registry loads the newest
`keep_versions` of them plus every version a label names, loads a new
version before it unloads an old one, replays the version's
`assets.extra/tf_serving_warmup_requests` before it answers with it, and
reports a version that fails to load as END with the error (the server
keeps serving the others).

Selection: `model_spec.version` names a loaded version; `version_label`
names a label of the optional `models.config` (a `ModelServerConfig` text
proto, the file TF Serving reads; its `model_version_policy` is honoured
too); "stable" means the latest loaded version unless the config labels it.
A request without either gets the latest version.

Errors (a request never crashes the server and never gets a score for
inputs that do not fit the signature): unknown model, version, label or
signature -> NOT_FOUND; a known model with no version loaded yet ->
UNAVAILABLE (callers retry); missing or unexpected input names, wrong
dtype, wrong rank or dims, malformed TensorProtos, inputs whose request
axis disagrees, history or candidate tensors that disagree in shape,
`hist_length` / `cand_count` outside their tensors' widths, an empty
candidate list -> INVALID_ARGUMENT naming the input with the expected and
received dtype or shape; errors raised inside the graph (its asserts) keep
their code (INVALID_ARGUMENT) and message; a message over the size limit
-> RESOURCE_EXHAUSTED from gRPC itself.

    python -m serving.local_server --server_export_dir=runs/tiny/export \
        --server_port=8500 [--server_model_name=hisac] \
        [--server_model_config=models.config] [--server_poll_s=2]
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import threading
import time
from typing import Mapping

import grpc
from absl import logging

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from hisac_tf.data.feature_spec import CANDIDATE_FEATURES, HISTORY_FEATURES

DEFAULT_SIGNATURE = "serving_default"
STABLE_LABEL = "stable"
MODEL_CONFIG_FILE = "models.config"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_ERROR_CHARS = 2000
MiB = 1 << 20

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_State = get_model_status_pb2.ModelVersionStatus.State


class RequestError(Exception):
    """A request the server refuses: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------- versions
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
    """

    version: int
    path: str
    loaded: object
    signatures: dict
    input_specs: dict
    signature_defs: get_model_metadata_pb2.SignatureDefMap


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
    return ModelVersion(version, path, loaded, signatures, input_specs, defs)


@dataclasses.dataclass
class _Failure:
    stamp: object  # What was on disk when the load failed.
    message: str


class ModelRegistry:
    """The versions of one model under an export directory.

    Args:
      export_dir: directory of integer-named SavedModel versions (any
        `tf.io.gfile` path).
      model_name: the name requests must use.
      keep_versions: how many of the newest versions stay loaded (besides
        the labelled ones) when the model config sets no version policy.
      model_config: path of a `ModelServerConfig` text proto with version
        labels and policy; None reads `<export_dir>/models.config` when it
        exists.
      max_message_bytes: the largest tensor a request may describe.
      warmup_records: warm-up requests replayed per version (0: none).
    """

    def __init__(
        self,
        export_dir: str,
        model_name: str = "hisac",
        keep_versions: int = 2,
        model_config: str | None = None,
        max_message_bytes: int = 256 * MiB,
        warmup_records: int = 100,
    ):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        if not model_name:
            raise ValueError("model_name must not be empty")
        self.export_dir = export_dir
        self.model_name = model_name
        self.keep_versions = keep_versions
        self.model_config = model_config
        self.max_message_bytes = max_message_bytes
        self.warmup_records = warmup_records
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._versions: dict[int, ModelVersion] = {}
        self._failures: dict[int, _Failure] = {}
        self._labels: dict[str, int] = {}
        self._policy: tuple = ("latest", keep_versions)
        self._config_read = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ polling
    def start_polling(self, poll_s: float) -> None:
        """Re-scans the export directory every `poll_s` seconds."""
        if poll_s <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(poll_s):
                try:
                    self.refresh()
                except Exception as e:  # Keep polling whatever happens.
                    logging.error("refresh of %s failed: %s",
                                  self.export_dir, e)

        self._thread = threading.Thread(
            target=loop, name="hisac-version-poller", daemon=True
        )
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def refresh(self) -> list[int]:
        """Loads new versions, unloads unwanted ones; returns those loaded.

        A version that fails to load (or to warm up) does not count towards
        `keep_versions`: the next older one stays in service.
        """
        with self._refresh_lock:
            self._read_model_config()
            on_disk = self._versions_on_disk()
            kind, arg = self._policy
            newest_first = sorted(on_disk, reverse=True)
            wanted: set[int] = set()
            if kind == "latest":
                for version in newest_first:
                    if len(wanted) >= arg:
                        break
                    if self._ensure_loaded(version, on_disk[version]):
                        wanted.add(version)
            else:
                chosen = (newest_first if kind == "all"
                          else [v for v in newest_first if v in arg])
                wanted = {v for v in chosen
                          if self._ensure_loaded(v, on_disk[v])}
            for version in set(self._labels.values()) & set(on_disk):
                if self._ensure_loaded(version, on_disk[version]):
                    wanted.add(version)
            with self._lock:
                for version in list(self._versions):
                    if version not in wanted:
                        del self._versions[version]
                        logging.info("unloaded %s version %d",
                                     self.model_name, version)
                for version in list(self._failures):
                    if version not in on_disk:
                        del self._failures[version]
                return sorted(self._versions)

    def _ensure_loaded(self, version: int, stamp) -> bool:
        """Loads `version` unless loaded; False if it cannot be loaded."""
        with self._lock:
            if version in self._versions:
                return True
        failure = self._failures.get(version)
        if failure is not None and failure.stamp == stamp:
            return False  # Failed before and unchanged on disk.
        path = _join(self.export_dir, str(version))
        try:
            model = load_version(path, version)
            self._warm_up(model)
        except Exception as e:
            message = _clean_message(f"{type(e).__name__}: {e}")
            logging.error("cannot load %s: %s", path, message)
            self._failures[version] = _Failure(stamp, message)
            return False
        self._failures.pop(version, None)
        with self._lock:
            self._versions[version] = model
        logging.info("loaded %s version %d", self.model_name, version)
        return True

    def _versions_on_disk(self) -> dict[int, object]:
        """Integer version directories with a saved_model.pb -> stamp."""
        found = {}
        try:
            names = tf.io.gfile.listdir(self.export_dir)
        except tf.errors.NotFoundError:
            return found
        for name in names:
            name = name.rstrip("/")
            if not name.isdigit():
                continue  # Temporary export directories, config files.
            pb = _join(self.export_dir, name, "saved_model.pb")
            try:
                stat = tf.io.gfile.stat(pb)
            except tf.errors.NotFoundError:
                continue  # Not complete yet.
            found[int(name)] = (stat.length, stat.mtime_nsec)
        return found

    def _read_model_config(self) -> None:
        path = self.model_config
        if path is None:
            path = _join(self.export_dir, MODEL_CONFIG_FILE)
            if not tf.io.gfile.exists(path):
                self._labels, self._policy = {}, ("latest",
                                                  self.keep_versions)
                return
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
        config = model_server_config_pb2.ModelServerConfig()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as e:
            if not self._config_read:
                raise ValueError(f"model config {path}: {e}") from e
            # Being rewritten, or broken: keep the labels read before.
            logging.error("model config %s unreadable, kept the previous "
                          "one: %s", path, e)
            return
        self._config_read = True
        entries = [c for c in config.model_config_list.config
                   if c.name == self.model_name]
        if not entries:
            self._labels, self._policy = {}, ("latest", self.keep_versions)
            return
        entry = entries[0]
        self._labels = dict(entry.version_labels)
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            self._policy = ("all", None)
        elif which == "specific":
            self._policy = ("specific", tuple(policy.specific.versions))
        elif which == "latest":
            self._policy = ("latest", max(1, policy.latest.num_versions))
        else:
            self._policy = ("latest", self.keep_versions)

    def _warm_up(self, model: ModelVersion) -> None:
        """Replays the version's warm-up Predict requests (as TF Serving)."""
        path = _join(model.path, WARMUP_FILE)
        if not self.warmup_records or not tf.io.gfile.exists(path):
            return
        records = tf.data.TFRecordDataset(path).take(self.warmup_records)
        for index, record in enumerate(records):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                continue
            request = log.predict_log.request
            try:
                run_predict(model, request, self.max_message_bytes)
            except RequestError as e:
                raise ValueError(
                    f"warm-up request {index} of {path} failed "
                    f"({e.code.name}): {e.message}"
                ) from None

    # ---------------------------------------------------------- selection
    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._versions)

    def select(self, spec) -> ModelVersion:
        """The loaded version a `ModelSpec` asks for (or RequestError)."""
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "model_spec.name is empty")
        if spec.name != self.model_name:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} not found; this server serves "
                f"{self.model_name!r}",
            )
        with self._lock:
            versions = dict(self._versions)
            labels = self._labels_locked()
        loaded = sorted(versions)
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
            if version not in versions:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model {self.model_name!r} version {version} not "
                    f"found; loaded versions: {loaded}",
                )
            return versions[version]
        if choice == "version_label":
            label = spec.version_label
            if label not in labels:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model {self.model_name!r} has no version label "
                    f"{label!r}; labels: {sorted(labels)}",
                )
            version = labels[label]
            if version not in versions:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"label {label!r} of model {self.model_name!r} names "
                    f"version {version}, which is not loaded; loaded "
                    f"versions: {loaded}",
                )
            return versions[version]
        if not versions:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"model {self.model_name!r} has no version loaded yet "
                f"under {self.export_dir}",
            )
        return versions[loaded[-1]]

    def labels(self) -> dict[str, int]:
        with self._lock:
            return self._labels_locked()

    def _labels_locked(self) -> dict[str, int]:
        labels = dict(self._labels)
        if STABLE_LABEL not in labels and self._versions:
            labels[STABLE_LABEL] = max(self._versions)
        return labels

    def statuses(self) -> list[tuple[int, int, int, str]]:
        """(version, state, error code, message) of every known version."""
        with self._lock:
            out = [(v, _State.AVAILABLE, 0, "") for v in self._versions]
        for version, failure in list(self._failures.items()):
            out.append((version, _State.END,
                        grpc.StatusCode.UNKNOWN.value[0], failure.message))
        return sorted(out)


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


# ------------------------------------------------------------ conversion
def tensor_from_proto(name: str, proto, spec: tf.TensorSpec,
                      max_elements: int) -> np.ndarray:
    """Checks one input TensorProto against its TensorSpec; numpy value.

    Raises:
      RequestError(INVALID_ARGUMENT): naming the input and what differs.
    """

    def bad(text):
        return RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"input {name!r}: {text}")

    want = spec.dtype
    try:
        got = tf.dtypes.as_dtype(proto.dtype)
        got_name = got.name
    except TypeError:
        got, got_name = None, f"enum {proto.dtype}"
    if got != want:
        raise bad(f"expected dtype {want.name}, got {got_name}")
    expected_shape = _shape_text(spec.shape)
    if proto.tensor_shape.unknown_rank:
        raise bad(f"expected shape {expected_shape}, got an unknown rank")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise bad(f"expected shape {expected_shape}, got {dims} "
                  "(negative dimension)")
    if spec.shape.rank is not None and len(dims) != spec.shape.rank:
        raise bad(f"expected rank {spec.shape.rank} (shape "
                  f"{expected_shape}), got rank {len(dims)} (shape {dims})")
    if not spec.shape.is_compatible_with(dims):
        raise bad(f"expected shape {expected_shape}, got {dims}")
    elements = math.prod(dims)
    if elements > max_elements:
        raise bad(f"shape {dims} has {elements} elements, more than the "
                  f"limit {max_elements}")
    count = _value_count(proto, want)
    if count is None:
        raise bad(f"tensor_content of {len(proto.tensor_content)} bytes is "
                  f"not a whole number of {want.name} values")
    if count != elements and not (count == 1 and elements > 0):
        raise bad(f"holds {count} values but its shape {dims} has "
                  f"{elements} elements")
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # Malformed protos: never crash the server.
        raise bad(f"malformed TensorProto ({type(e).__name__}: {e})")


def _value_count(proto, dtype: tf.DType) -> int | None:
    if proto.tensor_content:
        size = dtype.size
        if len(proto.tensor_content) % size:
            return None
        return len(proto.tensor_content) // size
    return sum(
        len(value) for field, value in proto.ListFields()
        if field.name.endswith("_val")
    )


def _shape_text(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "<any>"
    return "[" + ", ".join("?" if d is None else str(d)
                           for d in shape.as_list()) + "]"


def check_request_shapes(arrays: Mapping[str, np.ndarray]) -> None:
    """Cross-input checks of the hisac request layout (FeatureSpec).

    Every input shares the request axis R; the history tensors share one
    shape [R, N'], the candidate tensors [R, C']; hist_length lies in
    [0, N'] and cand_count in [1, C'].

    Raises:
      RequestError(INVALID_ARGUMENT): naming the inputs and values.
    """

    def bad(text):
        return RequestError(grpc.StatusCode.INVALID_ARGUMENT, text)

    batched = {k: v for k, v in arrays.items() if v.ndim >= 1}
    if batched:
        first = min(batched)
        rows = batched[first].shape[0]
        for name in sorted(batched):
            if batched[name].shape[0] != rows:
                raise bad(
                    f"input {name!r} has {batched[name].shape[0]} requests "
                    f"(shape {list(batched[name].shape)}) but {first!r} has "
                    f"{rows} (shape {list(batched[first].shape)})"
                )
    for group in (HISTORY_FEATURES, CANDIDATE_FEATURES):
        present = [name for name in group if name in arrays]
        for name in present[1:]:
            if arrays[name].shape != arrays[present[0]].shape:
                raise bad(
                    f"input {name!r} has shape {list(arrays[name].shape)} "
                    f"but {present[0]!r} has "
                    f"{list(arrays[present[0]].shape)}; they must agree"
                )
    _check_counts(arrays, "hist_length", "hist_item_ids", 0)
    _check_counts(arrays, "cand_count", "cand_item_ids", 1)


def _check_counts(arrays, count_name, tensor_name, low):
    if count_name not in arrays or tensor_name not in arrays:
        return
    counts, tensor = arrays[count_name], arrays[tensor_name]
    if tensor.ndim != 2 or counts.ndim != 1:
        return
    width = tensor.shape[1]
    if low > 0 and width == 0 and tensor.shape[0] > 0:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {tensor_name!r} holds no candidates (shape "
            f"{list(tensor.shape)}); every request needs at least one",
        )
    out = np.flatnonzero((counts < low) | (counts > width))
    if out.size:
        row = int(out[0])
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {count_name!r} must lie in [{low}, {width}] (the width "
            f"of {tensor_name!r}, shape {list(tensor.shape)}); got "
            f"{int(counts[row])} for request {row}",
        )


def run_predict(model: ModelVersion, request: predict_pb2.PredictRequest,
                max_message_bytes: int) -> predict_pb2.PredictResponse:
    """Runs one PredictRequest on a loaded version (or RequestError)."""
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
    arrays = {
        key: tensor_from_proto(key, request.inputs[key], specs[key],
                               max_message_bytes)
        for key in sorted(specs)
    }
    check_request_shapes(arrays)
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
    try:
        outputs = fn(**{k: tf.constant(v) for k, v in arrays.items()})
    except tf.errors.OpError as e:
        code = _CODES.get(e.error_code, grpc.StatusCode.INTERNAL)
        raise RequestError(code, _clean_message(e.message)) from None
    except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           _clean_message(str(e))) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = model.version
    response.model_spec.signature_name = name
    for key in outputs_wanted or sorted(outputs):
        value = outputs[key]
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response


def _clean_message(text: str) -> str:
    """TF error text without graph-node lines, bounded for gRPC trailers."""
    lines = [
        line.strip() for line in text.splitlines()
        if line.strip() and "{{node" not in line
    ]
    text = " ".join(lines)
    start = text.find("assertion failed:")
    if start > 0:
        text = text[start:]  # Drops "Graph execution error: ... node".
    cut = text.find(" [Op:__inference")
    if cut > 0:
        text = text[:cut]
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + " ..."
    return text


# -------------------------------------------------------------- services
def _guarded(method):
    """Maps RequestError and any other exception to a gRPC status."""

    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except RequestError as e:
            error = e
        except Exception as e:  # Never let a request take the server down.
            logging.exception("internal error in %s", method.__name__)
            error = RequestError(grpc.StatusCode.INTERNAL,
                                 _clean_message(f"{type(e).__name__}: {e}"))
        context.abort(error.code, error.message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a `ModelRegistry`."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guarded
    def Predict(self, request, context):
        model = self.registry.select(request.model_spec)
        response = run_predict(model, request,
                               self.registry.max_message_bytes)
        response.model_spec.name = self.registry.model_name
        return response

    @_guarded
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field must be ['signature_def'], got {fields}",
            )
        model = self.registry.select(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.registry.model_name
        response.model_spec.version.value = model.version
        response.metadata["signature_def"].Pack(model.signature_defs)
        return response

    @_guarded
    def Classify(self, request, context):
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           "Classify is not served; use Predict with the "
                           "predict_examples signature")

    @_guarded
    def Regress(self, request, context):
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           "Regress is not served; use Predict with the "
                           "predict_examples signature")

    @_guarded
    def MultiInference(self, request, context):
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           "MultiInference is not served; use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over a `ModelRegistry`."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guarded
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        registry = self.registry
        if spec.name != registry.model_name:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} not found; this server serves "
                f"{registry.model_name!r}",
            )
        statuses = registry.statuses()
        choice = spec.WhichOneof("version_choice")
        if choice is not None:
            wanted = registry.select(spec).version
            statuses = [s for s in statuses if s[0] == wanted]
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, code, message in statuses:
            status = response.model_version_status.add()
            status.version = version
            status.state = state
            status.status.error_code = code
            status.status.error_message = message
        return response

    @_guarded
    def HandleReloadConfigRequest(self, request, context):
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           "edit models.config instead; it is re-read at "
                           "every poll")


# ---------------------------------------------------------------- server
class LocalServer:
    """A running local server: the gRPC server, its port and registry."""

    def __init__(self, server: grpc.Server, port: int,
                 registry: ModelRegistry):
        self.server = server
        self.port = port
        self.registry = registry

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    def wait_for_version(self, version: int, timeout_s: float = 30.0) -> None:
        """Blocks until `version` is loaded (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout_s
        while version not in self.registry.versions():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"version {version} not loaded after {timeout_s} s; "
                    f"loaded: {self.registry.versions()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float | None = None) -> None:
        self.registry.stop_polling()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(
    export_dir: str,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    model_name: str = "hisac",
    model_config: str | None = None,
    poll_s: float = 2.0,
    keep_versions: int = 2,
    max_message_mb: int = 256,
    max_workers: int = 8,
    warmup_records: int = 100,
) -> tuple[LocalServer, int]:
    """Loads the export directory's versions and starts serving.

    Args:
      export_dir: `<export_dir>/<version>/` SavedModels.
      port: TCP port; 0 picks a free one.
      host: address to bind ("0.0.0.0" for every interface).
      model_name: the name requests must use.
      model_config: optional `ModelServerConfig` text proto (labels,
        version policy); default `<export_dir>/models.config` if present.
      poll_s: seconds between scans for new versions (0: never).
      keep_versions: newest versions kept loaded without a config policy.
      max_message_mb: largest request or response message, MiB.
      max_workers: threads answering requests.
      warmup_records: warm-up requests replayed per version.
    Returns:
      (server, port): the running `LocalServer` and the bound port.
    """
    max_bytes = int(max_message_mb * MiB)
    if max_bytes < 1:
        raise ValueError(f"max_message_mb must be > 0, got {max_message_mb}")
    registry = ModelRegistry(
        export_dir, model_name, keep_versions, model_config, max_bytes,
        warmup_records,
    )
    registry.refresh()
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="hisac-grpc"
        ),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(registry), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    registry.start_polling(poll_s)
    return LocalServer(server, bound, registry), bound


def stop(server: LocalServer, grace: float | None = None) -> None:
    """Stops a server returned by `start_server`."""
    server.stop(grace)


# ------------------------------------------------------------------- CLI
def _define_flags():
    from absl import flags

    flags.DEFINE_string("server_export_dir", None,
                        "Directory of <version>/ SavedModels.")
    flags.DEFINE_integer("server_port", 8500, "gRPC port (0: any free).")
    flags.DEFINE_string("server_host", "0.0.0.0", "Address to bind.")
    flags.DEFINE_string("server_model_name", "hisac", "Served model name.")
    flags.DEFINE_string("server_model_config", None,
                        "ModelServerConfig text proto (version labels).")
    flags.DEFINE_float("server_poll_s", 2.0,
                       "Seconds between scans for new versions.")
    flags.DEFINE_integer("server_keep_versions", 2,
                         "Newest versions kept loaded.")
    flags.DEFINE_integer("server_max_message_mb", 256,
                         "Largest gRPC message, MiB.")
    flags.DEFINE_integer("server_max_workers", 8, "Request threads.")
    return flags.FLAGS


def main(argv) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.server_export_dir:
        raise SystemExit("--server_export_dir is required")
    logging.set_verbosity(logging.INFO)
    server, port = start_server(
        FLAGS.server_export_dir,
        FLAGS.server_port,
        host=FLAGS.server_host,
        model_name=FLAGS.server_model_name,
        model_config=FLAGS.server_model_config,
        poll_s=FLAGS.server_poll_s,
        keep_versions=FLAGS.server_keep_versions,
        max_message_mb=FLAGS.server_max_message_mb,
        max_workers=FLAGS.server_max_workers,
    )
    print(f"serving {FLAGS.server_model_name!r} versions "
          f"{server.registry.versions()} from {FLAGS.server_export_dir} on "
          f"port {port}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(1.0)


def run():
    """`hisac-serve`: the local PredictionService server."""
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
