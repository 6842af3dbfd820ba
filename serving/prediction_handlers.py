"""The gRPC handlers of the development server over a `ModelRegistry`.

docs/design.md §6. TF Serving's `PredictionService` (Predict,
GetModelMetadata) and `ModelService` (GetModelStatus): each selects the
version a request's `model_spec` names (`serving.version_manager`) and
runs it (`serving.model_version`). A request never crashes the server:
`RequestError`s become their gRPC status, anything else INTERNAL.
Predict sheds work nobody waits for: a call whose caller has gone
(`context.is_active()`) or whose deadline has passed when a thread takes
it, or by the time its inputs are checked, is dropped (CANCELLED or
DEADLINE_EXCEEDED) without running the model.
Classify, Regress, MultiInference and HandleReloadConfigRequest answer
UNIMPLEMENTED.
"""

from __future__ import annotations

import grpc
from absl import logging
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.model_version import run_predict
from serving.request_checks import RequestError, clean_message
from serving.version_manager import ModelRegistry


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
                                 clean_message(f"{type(e).__name__}: {e}"))
        context.abort(error.code, error.message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _wanted(context) -> bool:
    """Whether the caller still waits and has time left."""
    if not context.is_active():
        return False
    remaining = context.time_remaining()
    return remaining is None or remaining > 0


def _still_wanted(context) -> None:
    """RequestError when the caller has gone or its deadline has passed."""
    if not context.is_active():
        raise RequestError(grpc.StatusCode.CANCELLED,
                           "the caller has gone; not run")
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           "the deadline passed before the call ran")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a `ModelRegistry`."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guarded
    def Predict(self, request, context):
        _still_wanted(context)
        model = self.registry.select(request.model_spec)
        response = run_predict(
            model, request, self.registry.max_message_bytes,
            self.registry.limits, is_active=lambda: _wanted(context))
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

