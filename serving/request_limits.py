"""Limits on what a request may make the server allocate.

docs/design.md §6. A TensorProto declares its shape apart from its
values, and one value fills the whole shape (proto semantics), so a
request of a few hundred bytes can declare inputs of gigabytes. Before
any tensor is materialised, `check_declared` bounds every input from the
proto's declared dimensions and dtype alone (no `tf.make_ndarray`):

    R   (dim 0 of every batched input)      <= max_requests
    N'  (width of the hist_* inputs)        <= max_history_multiple x N
                                               (N = the exported
                                               max_history; the newest N
                                               are kept anyway)
    C   (width of the cand_* inputs)        <= max_candidates
    sum over inputs of elements x bytes     <= max_request_bytes

A dimension limit broken -> INVALID_ARGUMENT; the byte budget ->
RESOURCE_EXHAUSTED; both name the input, its declared shape and the
limit. Defaults come from the config's `export` section
(`RequestLimits.from_config`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.export import input_contract as contract
from serving.request_checks import RequestError

MiB = 1 << 20
# A string element costs at least one object reference once materialised.
STRING_ELEMENT_BYTES = 8


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one call may declare (see the module docstring).

    Attributes:
      max_history_multiple: history width N' <= this x the exported N.
      max_candidates: candidate width C per request.
      max_requests: R, requests per call.
      max_request_bytes: elements x element size summed over the inputs.
    """

    max_history_multiple: int = 4
    max_candidates: int = 1024
    max_requests: int = 1024
    max_request_bytes: int = 64 * MiB

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"RequestLimits.{field.name} must be an int >= 1, got "
                    f"{value!r}")

    @classmethod
    def from_config(cls, export_cfg) -> "RequestLimits":
        """From `Config.export` (max_history_multiple, max_candidates,
        max_requests, max_request_mb)."""
        return cls(
            max_history_multiple=export_cfg.max_history_multiple,
            max_candidates=export_cfg.max_candidates,
            max_requests=export_cfg.max_requests,
            max_request_bytes=int(export_cfg.max_request_mb * MiB),
        )


def declared_bytes(proto) -> int | None:
    """Bytes the TensorProto would take once materialised, from its
    declared shape and dtype only (None: dtype or shape unusable; the
    per-input checks refuse it with their own message)."""
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        return None
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        return None
    size = STRING_ELEMENT_BYTES if dtype == tf.string else dtype.size
    extra = sum(len(s) for s in proto.string_val)  # Strings' own bytes.
    return math.prod(dims) * max(size, 1) + extra


def check_declared(inputs: Mapping[str, object], limits: RequestLimits,
                   max_history: int | None) -> int:
    """Checks the declared shapes of a request's inputs; returns bytes.

    Args:
      inputs: input name -> TensorProto (a PredictRequest's `inputs`).
      limits: the server's `RequestLimits`.
      max_history: the served version's N (None: unknown, no N' limit).
    Raises:
      RequestError: INVALID_ARGUMENT (a dimension limit) or
        RESOURCE_EXHAUSTED (the byte budget), naming the input, its
        declared shape and the limit.
    """
    total = 0
    for name in sorted(inputs):
        proto = inputs[name]
        dims = [d.size for d in proto.tensor_shape.dim]
        if dims and dims[0] > limits.max_requests:
            raise _refuse(
                grpc.StatusCode.INVALID_ARGUMENT, name, dims,
                f"R = {dims[0]} requests, more than max_requests = "
                f"{limits.max_requests}")
        group = contract.group_of(name)
        if group is not None and len(dims) >= 2:
            width = dims[1]
            if group is contract.HISTORY and max_history is not None:
                cap = limits.max_history_multiple * max_history
                if width > cap:
                    raise _refuse(
                        grpc.StatusCode.INVALID_ARGUMENT, name, dims,
                        f"history width N' = {width}, more than "
                        f"max_history_multiple x N = "
                        f"{limits.max_history_multiple} x {max_history} = "
                        f"{cap} (the newest N items are kept anyway)")
            if (group is contract.CANDIDATES
                    and width > limits.max_candidates):
                raise _refuse(
                    grpc.StatusCode.INVALID_ARGUMENT, name, dims,
                    f"C = {width} candidates, more than max_candidates = "
                    f"{limits.max_candidates}")
        size = declared_bytes(proto)
        if size is None:
            continue
        total += size
        if total > limits.max_request_bytes:
            raise _refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED, name, dims,
                f"{size} bytes once materialised, the request "
                f"{total} bytes so far, more than max_request_bytes = "
                f"{limits.max_request_bytes}")
    return total


def _refuse(code: grpc.StatusCode, name: str, dims: list[int],
            text: str) -> RequestError:
    return RequestError(code,
                        f"input {name!r} declares shape {dims}: {text}")
