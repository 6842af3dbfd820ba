"""A local gRPC server with TF Serving's API over hisac SavedModels.

Stock TensorFlow Serving cannot be installed everywhere (docs/design.md
§6), so this server answers the same `PredictionService` (Predict,
GetModelMetadata) and `ModelService` (GetModelStatus) over
`<export_dir>/<version>/` SavedModels, for development and tests:

    export_dir/<version>/ ── version_manager ── prediction_handlers ── gRPC
                            (versions, labels)  (Predict, metadata,
                                                 status)
                            model_version: load, run a request
                            request_checks: the input contract, refused
                            requests named

Errors (a request never crashes the server and never gets a score for
inputs that do not fit the signature): unknown model, version, label or
signature -> NOT_FOUND; a known model with no version loaded yet ->
UNAVAILABLE (callers retry); inputs that break the signature's contract
-> INVALID_ARGUMENT naming the input with the expected and received
value (`serving.request_checks`); errors raised inside the graph (its
asserts) keep their code and message; a message over the size limit ->
RESOURCE_EXHAUSTED from gRPC itself; inputs whose declared shapes break
the server's limits (`serving.request_limits`) -> INVALID_ARGUMENT or
RESOURCE_EXHAUSTED before any tensor is materialised.

Overload: at most `max_concurrent_rpcs` calls are admitted (running or
queued for a thread); gRPC answers the others RESOURCE_EXHAUSTED at once.
A call whose caller has gone or whose deadline has passed by the time a
thread takes it is dropped without running the model
(`prediction_handlers`), so abandoned work does not delay live calls.

Exposure: the server binds 127.0.0.1 unless `host` says otherwise, and
has no authentication of its own. Beyond loopback, give it TLS
(`tls_cert` + `tls_key`; `tls_client_ca` also requires client
certificates signed by that CA: mutual TLS).

Command line: `pipelines/serve.py` (hisac-serve).
"""

from __future__ import annotations

import concurrent.futures
import ssl
import time

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.prediction_handlers import ModelServicer, PredictionServicer
from serving.request_limits import RequestLimits
from serving.version_manager import MiB, ModelRegistry


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
    limits: RequestLimits | None = None,
    max_concurrent_rpcs: int | None = 32,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    reuse_port: bool = False,
) -> tuple[LocalServer, int]:
    """Loads the export directory's versions and starts serving.

    Args:
      export_dir: `<export_dir>/<version>/` SavedModels.
      port: TCP port; 0 picks a free one.
      host: address to bind (default loopback; "0.0.0.0" for every
        interface, which exposes the model: use TLS).
      model_name: the name requests must use.
      model_config: optional `ModelServerConfig` text proto (labels,
        version policy); default `<export_dir>/models.config` if present.
      poll_s: seconds between scans for new versions (0: never).
      keep_versions: newest versions kept loaded without a config policy.
      max_message_mb: largest request or response message, MiB.
      max_workers: threads answering requests.
      warmup_records: warm-up requests replayed per version.
      limits: bounds on each request's declared shapes (default
        `RequestLimits()`).
      max_concurrent_rpcs: calls admitted at once (running or queued);
        more get RESOURCE_EXHAUSTED. None: unbounded.
      tls_cert, tls_key: PEM files of the server's certificate chain and
        private key; both or neither (plaintext).
      tls_client_ca: PEM file of the CA that client certificates must be
        signed by (mutual TLS); needs tls_cert.
      reuse_port: let other processes bind the same port (SO_REUSEPORT,
        gRPC's default; traffic then splits between them). Off: a port
        already in use is refused.
    Returns:
      (server, port): the running `LocalServer` and the bound port.
    Raises:
      ValueError: a port outside 0..65535, or TLS files that are not
        PEM (naming the file).
      OSError: the address cannot be bound (e.g. the port is in use).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not (
            0 <= port <= 65535):
        raise ValueError(f"port must be an int in 0..65535 (0: any free), "
                         f"got {port!r}")
    max_bytes = int(max_message_mb * MiB)
    if max_bytes < 1:
        raise ValueError(f"max_message_mb must be > 0, got {max_message_mb}")
    if max_concurrent_rpcs is not None and max_concurrent_rpcs < 1:
        raise ValueError("max_concurrent_rpcs must be >= 1 or None, got "
                         f"{max_concurrent_rpcs}")
    credentials = server_credentials(tls_cert, tls_key, tls_client_ca)
    registry = ModelRegistry(
        export_dir, model_name, keep_versions, model_config, max_bytes,
        warmup_records, limits,
    )
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="hisac-grpc"
        ),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(registry), server
    )
    address = f"{host}:{port}"
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as e:  # grpcio >= 1.50: "Failed to bind ..."
        bound, reason = 0, f" ({e})"
    else:
        reason = ""
    if bound == 0:
        raise OSError(
            f"cannot bind {address}{reason}: the port is in use by another "
            "process (pass reuse_port / --server_reuse_port to share it) "
            "or the address is not this host's")
    # Bound (the port held) before the versions load: a port in use is
    # refused at once, not after minutes of loading.
    try:
        registry.refresh()
    except BaseException:
        server.stop(None)
        raise
    server.start()
    registry.start_polling(poll_s)
    return LocalServer(server, bound, registry), bound


def server_credentials(cert: str | None, key: str | None,
                       client_ca: str | None = None):
    """grpc.ServerCredentials from PEM files, or None for plaintext.

    Raises:
      ValueError: only one of cert and key, a client CA without them, or
        a file that is not PEM (or a key not of the certificate), named.
      FileNotFoundError: a file that does not exist, named.
    """
    if not cert and not key:
        if client_ca:
            raise ValueError(f"tls_client_ca ({client_ca}) needs tls_cert "
                             "and tls_key")
        return None
    if not cert or not key:
        raise ValueError(f"give tls_cert and tls_key together; got "
                         f"tls_cert={cert!r}, tls_key={key!r}")
    pem = {name: _read(name, path) for name, path in
           (("tls_cert", cert), ("tls_key", key),
            ("tls_client_ca", client_ca)) if path}
    _check_pem(cert, key, client_ca)
    return grpc.ssl_server_credentials(
        [(pem["tls_key"], pem["tls_cert"])],
        root_certificates=pem.get("tls_client_ca"),
        require_client_auth="tls_client_ca" in pem,
    )


def _check_pem(cert: str, key: str, client_ca: str | None) -> None:
    """ValueError naming the TLS file that is not what it should be
    (gRPC would only say "Failed to bind to address")."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name, path in (("tls_cert", cert), ("tls_client_ca", client_ca)):
        if not path:
            continue
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(
                cafile=path)
        except ssl.SSLError as e:
            raise ValueError(
                f"{name} {path}: not a PEM certificate ({e})") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ValueError(
            f"tls_key {key}: not a PEM private key of the certificate "
            f"tls_cert {cert} ({e})") from None


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file {path!r}") from None


def stop(server: LocalServer, grace: float | None = None) -> None:
    """Stops a server returned by `start_server`."""
    server.stop(grace)

