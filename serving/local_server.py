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
RESOURCE_EXHAUSTED from gRPC itself.

Command line: `pipelines/serve.py` (hisac-serve).
"""

from __future__ import annotations

import concurrent.futures
import time

import grpc
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.prediction_handlers import ModelServicer, PredictionServicer
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

