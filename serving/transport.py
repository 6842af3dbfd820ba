"""gRPC client of a served hisac model (TF Serving or `local_server`).

Requests are built from `FeatureSpec.input_signature()` (names and dtypes,
the one source of truth of docs/design.md §4) and sent through
`tensorflow-serving-api`'s `PredictionService`:

    predict(features)            serving_default   -> ctr [R, C]
    encode_user(user features)   encode_user       -> state (cacheable)
    score_with_state(state, c)   score_with_state  -> ctr [R, C]
    predict_examples(serialized) predict_examples  -> ctr [B]

Every call has a deadline (`timeout_s`) and is retried with exponential
backoff on UNAVAILABLE only (a server that is starting or restarting);
other errors raise `ServingError` at once with the server's status code and
message. `max_message_mb` lifts gRPC's 4 MiB default for long histories.
TLS: `tls_ca` (the CA that signed the server's certificate) makes the
channel TLS; `tls_cert` + `tls_key` add a client certificate (mutual TLS).

Requests come from a JSON file (`request_from_json`) or as the first
requests of a request-level TFRecord file, parsed and padded by the input
pipeline (`requests_from_tfrecord`); the command line is
`pipelines/score.py` (hisac-score). A JSON request is one object with
every scalar feature (user_id, request_time, user features) and the lists
(hist_item_ids, hist_category_ids, hist_behaviors, hist_timestamps, oldest
first; cand_item_ids, cand_category_ids); histories longer than the
config's N keep their newest N items, as in training.
"""

from __future__ import annotations

import json
import time
from typing import Mapping, Sequence

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from hisac_tf.config import DataConfig
from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import (
    CANDIDATE_FEATURES,
    HISTORY_FEATURES,
    FeatureSpec,
)
from hisac_tf.export.input_contract import CANDIDATE_INPUTS

CTR = "ctr"
MiB = 1 << 20


class ServingError(RuntimeError):
    """A failed call: the gRPC status `code` and the server's `details`."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str):
        super().__init__(f"{method} failed with {code.name}: {details}")
        self.code = code
        self.details = details
        self.method = method


def channel_credentials(ca: str | None, cert: str | None = None,
                        key: str | None = None):
    """grpc.ChannelCredentials from PEM files, or None for plaintext.

    Raises:
      ValueError: a client cert without its key (or the reverse), or
        either without `ca`.
      FileNotFoundError: naming a file that does not exist.
    """
    if bool(cert) != bool(key):
        raise ValueError(f"give tls_cert and tls_key together; got "
                         f"tls_cert={cert!r}, tls_key={key!r}")
    if not ca:
        if cert:
            raise ValueError("a client certificate (tls_cert) needs tls_ca, "
                             "the CA of the server's certificate")
        return None
    pem = {}
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path:
            try:
                with open(path, "rb") as f:
                    pem[name] = f.read()
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{name}: no such file {path!r}") from None
    return grpc.ssl_channel_credentials(
        root_certificates=pem["tls_ca"], private_key=pem.get("tls_key"),
        certificate_chain=pem.get("tls_cert"))


def default_spec() -> FeatureSpec:
    """The spec of the default data config (names and dtypes only)."""
    return FeatureSpec.from_config(DataConfig())


class HisacClient:
    """Client of one served model.

    Args:
      target: "host:port" of the server.
      model_name: the served model's name.
      version: a version number to pin, or None.
      version_label: a version label ("stable", "canary"), or None.
      timeout_s: deadline of each attempt.
      retries: further attempts after an UNAVAILABLE answer.
      max_message_mb: largest message sent or received, MiB.
      spec: the `FeatureSpec` whose input names and dtypes requests use
        (default: the default data config's).
      backoff_s: first wait before a retry; doubles each retry (max 2 s).
      tls_ca: PEM file of the CA to trust: a TLS channel (None: plaintext).
      tls_cert, tls_key: PEM client certificate chain and key (mutual
        TLS); need tls_ca.
      tls_server_name: the name the server's certificate must hold, when
        it is not the target's host.
    """

    def __init__(
        self,
        target: str,
        model_name: str = "hisac",
        version: int | None = None,
        version_label: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        max_message_mb: int = 256,
        spec: FeatureSpec | None = None,
        backoff_s: float = 0.1,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_server_name: str | None = None,
    ):
        if version is not None and version_label is not None:
            raise ValueError(
                f"give version ({version}) or version_label "
                f"({version_label!r}), not both"
            )
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_message_mb <= 0:
            raise ValueError(
                f"max_message_mb must be > 0, got {max_message_mb}"
            )
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.spec = spec or default_spec()
        self._signature = self.spec.input_signature()
        limit = int(max_message_mb * MiB)
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
        credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override",
                                tls_server_name))
            self.channel = grpc.secure_channel(target, credentials,
                                               options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(
            self.channel
        )
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._state_inputs: dict = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "HisacClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------- transport
    def call(self, method: str, request):
        """Calls `method` ("Predict", "GetModelMetadata", "GetModelStatus")
        with the deadline and the UNAVAILABLE retries."""
        stub = self.models if method == "GetModelStatus" else self.prediction
        rpc = getattr(stub, method)
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return rpc(request, timeout=self.timeout_s)
            except grpc.RpcError as e:
                code = e.code()
                if (code == grpc.StatusCode.UNAVAILABLE
                        and attempt < self.retries):
                    time.sleep(wait)
                    wait = min(2 * wait, 2.0)
                    continue
                raise ServingError(code, e.details() or "", method) from None
        raise AssertionError("unreachable")

    def _model_spec(self, target, signature_name: str | None = None):
        target.name = self.model_name
        if self.version is not None:
            target.version.value = self.version
        elif self.version_label is not None:
            target.version_label = self.version_label
        if signature_name is not None:
            target.signature_name = signature_name

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, object],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs any signature on raw inputs (numpy arrays or TensorProtos),
        sent as they are (no dtype conversion); returns its outputs."""
        request = self.build_request(signature_name, inputs, output_filter)
        response = self.call("Predict", request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def build_request(
        self,
        signature_name: str,
        inputs: Mapping[str, object],
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictRequest:
        """The PredictRequest `run` sends (inputs as they are)."""
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, signature_name)
        for name, value in inputs.items():
            if isinstance(value, tensor_pb2.TensorProto):
                request.inputs[name].CopyFrom(value)
            else:
                request.inputs[name].CopyFrom(
                    tf.make_tensor_proto(np.asarray(value))
                )
        request.output_filter.extend(output_filter)
        return request

    def predict_request(
            self, features: Mapping[str, object]) -> predict_pb2.PredictRequest:
        """The serving_default PredictRequest of `predict(features)`."""
        names = list(self._signature)
        return self.build_request("serving_default",
                                  self._inputs(features, names))

    # ------------------------------------------------------- signatures
    def predict(self, features: Mapping[str, object]) -> np.ndarray:
        """ctr [R, C] of R padded requests (`serving_default`)."""
        names = list(self._signature)
        return self.run("serving_default", self._inputs(features, names))[CTR]

    def encode_user(self, features: Mapping[str, object]) -> dict:
        """The cacheable compressed state of R users (`encode_user`):
        keys, values, bias, mask, user_embedding, model_fingerprint."""
        names = [n for n in self._signature if n not in CANDIDATE_INPUTS]
        wanted = self._state_names()
        return self.run("encode_user", self._inputs(features, names),
                        output_filter=wanted)

    def score_with_state(self, state: Mapping[str, np.ndarray],
                         candidates: Mapping[str, object]) -> np.ndarray:
        """ctr [R, C] of candidates given `encode_user`'s state."""
        names = [n for n in self._signature if n in CANDIDATE_INPUTS]
        inputs = self._inputs(candidates, names)
        wanted = self._state_names() or sorted(state)
        for name in wanted:
            if name not in state:
                raise ValueError(
                    f"state is missing {name!r}; it has {sorted(state)} "
                    "(pass what encode_user returned)"
                )
            inputs[name] = np.asarray(state[name])
        return self.run("score_with_state", inputs)[CTR]

    def predict_examples(self, serialized: Sequence[bytes]) -> np.ndarray:
        """ctr [B] of serialized per-impression tf.Examples."""
        examples = np.asarray(list(serialized), dtype=object)
        if examples.ndim != 1:
            raise ValueError(
                f"serialized must be a flat list of bytes, got shape "
                f"{examples.shape}"
            )
        return self.run("predict_examples", {"examples": examples})[CTR]

    def metadata(self) -> dict:
        """Signatures of the selected version: {name: {"inputs": {input:
        {"dtype", "shape"}}, "outputs": {...}, "method_name"}, plus
        "_version"}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self.call("GetModelMetadata", request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        out = {"_version": response.model_spec.version.value}
        for name, sig in defs.signature_def.items():
            out[name] = {
                "method_name": sig.method_name,
                "inputs": _tensor_infos(sig.inputs),
                "outputs": _tensor_infos(sig.outputs),
            }
        return out

    def status(self) -> list[dict]:
        """[{"version", "state", "error_code", "error_message"}, ...]."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        response = self.call("GetModelStatus", request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            {
                "version": s.version,
                "state": states.Name(s.state),
                "error_code": s.status.error_code,
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        """Blocks until the server answers with an AVAILABLE version.

        Errors other than UNAVAILABLE (an unknown model or version) end the
        wait at once: the calls that follow report them.

        Raises:
          ServingError(UNAVAILABLE): not ready after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        state = get_model_status_pb2.ModelVersionStatus.State
        while True:
            details = "no version AVAILABLE yet"
            try:
                response = self.models.GetModelStatus(
                    request, timeout=min(self.timeout_s, timeout_s))
                if any(s.state == state.AVAILABLE
                       for s in response.model_version_status):
                    return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    return
                details = e.details() or ""
            if time.monotonic() > deadline:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{self.target} not ready after {timeout_s} s: "
                    f"{details}", "GetModelStatus")
            time.sleep(0.2)

    # ---------------------------------------------------------- helpers
    def _state_names(self) -> list[str]:
        """score_with_state's state inputs (from the model's metadata)."""
        key = (self.version, self.version_label)
        if key not in self._state_inputs:
            sig = self.metadata().get("score_with_state")
            if sig is None:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    "the model has no score_with_state signature",
                    "GetModelMetadata",
                )
            self._state_inputs[key] = sorted(
                n for n in sig["inputs"] if n not in CANDIDATE_INPUTS
            )
        return self._state_inputs[key]

    def _inputs(self, features: Mapping[str, object],
                names: Sequence[str]) -> dict[str, np.ndarray]:
        """Arrays of `names` in the spec's dtypes (checked, not coerced)."""
        out = {}
        for name in names:
            if name not in features:
                raise ValueError(
                    f"features are missing {name!r}; need {list(names)}"
                )
            out[name] = _as_dtype(name, features[name],
                                  self._signature[name].dtype)
        return out


def _as_dtype(name: str, value, dtype: tf.DType) -> np.ndarray:
    """Integer values converted to `dtype`; anything else is refused."""
    arr = np.asarray(value)
    want = dtype.as_numpy_dtype
    if arr.dtype == want:
        return arr
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"feature {name!r} must hold integers ({dtype.name}), got "
            f"dtype {arr.dtype}"
        )
    info = np.iinfo(want)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(
            f"feature {name!r} has values outside {dtype.name}: "
            f"[{arr.min()}, {arr.max()}]"
        )
    return arr.astype(want)


def _tensor_infos(infos) -> dict:
    out = {}
    for name, info in infos.items():
        shape = (None if info.tensor_shape.unknown_rank
                 else [d.size for d in info.tensor_shape.dim])
        out[name] = {
            "dtype": tf.dtypes.as_dtype(info.dtype).name,
            "shape": shape,
        }
    return out


# --------------------------------------------------------------- requests
def request_from_dict(request: Mapping[str, object],
                      spec: FeatureSpec) -> dict[str, np.ndarray]:
    """One request's plain values -> padded model inputs with R = 1.

    Histories keep their newest `spec.max_history` items (as training
    does); the request's own lengths give hist_length and cand_count.

    Raises:
      ValueError: naming a missing field or lists of disagreeing lengths.
    """
    out = {}
    for name in spec.scalar_features:
        if name not in request:
            raise ValueError(f"request is missing field {name!r}")
        value = np.asarray(request[name])
        if value.ndim != 0:
            raise ValueError(
                f"field {name!r} must be one integer, got {request[name]!r}"
            )
        out[name] = _as_dtype(name, value.reshape([1]), tf.int64)
    for group, count in ((HISTORY_FEATURES, "hist_length"),
                         (CANDIDATE_FEATURES, "cand_count")):
        lists = {}
        for name in group:
            if name not in request:
                raise ValueError(f"request is missing field {name!r}")
            values = np.asarray(request[name])
            if values.ndim != 1:
                raise ValueError(
                    f"field {name!r} must be a list of integers, got "
                    f"shape {list(values.shape)}"
                )
            lists[name] = _as_dtype(name, values, tf.int64)
        lengths = {name: len(v) for name, v in lists.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"lists of one request must have equal lengths, got "
                f"{lengths}"
            )
        if group is HISTORY_FEATURES:
            lists = {k: v[-spec.max_history:] for k, v in lists.items()}
        n = len(next(iter(lists.values())))
        for name, values in lists.items():
            out[name] = values.reshape([1, n])
        out[count] = np.asarray([n], np.int32)
    return out


def request_from_json(path: str, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """One request from a JSON file (see the module docstring)."""
    with tf.io.gfile.GFile(path) as f:
        request = json.load(f)
    if not isinstance(request, dict):
        raise ValueError(f"{path}: expected one JSON object (a request)")
    return request_from_dict(request, spec)


def requests_from_tfrecord(path: str, spec: FeatureSpec,
                           max_requests: int = 1,
                           compression: str | None = None) -> dict:
    """The first `max_requests` requests of a request-level TFRecord file,
    parsed, checked and padded by the training input pipeline."""
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


def load_request(path: str, spec: FeatureSpec,
                 max_requests: int = 1) -> dict[str, np.ndarray]:
    """Model inputs from a .json request or a request-level TFRecord."""
    if path.endswith(".json"):
        return request_from_json(path, spec)
    return requests_from_tfrecord(path, spec, max_requests)


def split_request(features: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """(user-side features, candidate features) of padded inputs."""
    user = {k: v for k, v in features.items() if k not in CANDIDATE_INPUTS}
    cands = {k: v for k, v in features.items() if k in CANDIDATE_INPUTS}
    return user, cands
