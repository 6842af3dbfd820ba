"""Transport to a served model: channel, TLS, deadlines, retries, stubs.

The gRPC half of the client (`serving.grpc_client.HisacClient` adds the
HiSAC calls on top; docs/design.md §6). `Transport` owns one channel to
TF Serving or `serving.local_server` and its `PredictionService` and
`ModelService` stubs:

    run(signature, inputs)   Predict on raw inputs -> {output: ndarray}
    metadata()               GetModelMetadata: the signature_def map
    status()                 GetModelStatus of the selected model
    wait_until_ready()       blocks until a version is AVAILABLE

Every call has a deadline (`timeout_s`) and is retried with exponential
backoff on UNAVAILABLE only (a server that is starting or restarting);
other errors raise `ServingError` at once with the server's status code and
message. `max_message_mb` lifts gRPC's 4 MiB default for long histories.
TLS: `tls_ca` (the CA that signed the server's certificate) makes the
channel TLS; `tls_cert` + `tls_key` add a client certificate (mutual TLS).
"""

from __future__ import annotations

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


class Transport:
    """One channel to a served model, its stubs and the call policy.

    Args:
      target: "host:port" of the server.
      model_name: the served model's name.
      version: a version number to pin, or None.
      version_label: a version label ("stable", "canary"), or None.
      timeout_s: deadline of each attempt.
      retries: further attempts after an UNAVAILABLE answer.
      max_message_mb: largest message sent or received, MiB.
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

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- calls
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

    def metadata(self) -> dict:
        """Signatures of the selected version: {name: {"inputs": {input:
        {"dtype", "shape"}}, "outputs": {...}, "method_name"}, plus
        "_version"}. Dtypes are TF names ("int64", "string"); unknown
        dimensions are -1."""
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
