"""Checks of a PredictRequest's inputs before the graph runs.

docs/design.md §6. A request the development server refuses gets
INVALID_ARGUMENT naming the input, with the expected and received value:

  * per input, against the loaded signature's `tf.TensorSpec` (the
    SavedModel's own input contract: `FeatureSpec.input_signature()` for
    the request inputs): dtype, rank, fixed dimensions, element count,
    malformed TensorProtos, the size limit (`tensor_from_proto`);
  * across inputs, the rules of `hisac_tf.export.input_contract` (the
    table the graph's own asserts are built from): one request axis R,
    each padded group (history, candidates) of one shape [R, W], counts
    in [min_count, W], values within the counts at or above their lower
    bounds, timestamps sorted and not after the request time
    (`check_request`).

Errors raised inside the graph keep their code and message
(`clean_message` drops the graph-node noise).
"""

from __future__ import annotations

import math
from typing import Mapping

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.export import input_contract as contract

MAX_ERROR_CHARS = 2000


class RequestError(Exception):
    """A request the server refuses: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(text: str) -> RequestError:
    """An INVALID_ARGUMENT RequestError."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, text)


# ---------------------------------------------------------- one input
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


# ------------------------------------------------------- across inputs
def check_request(arrays: Mapping[str, np.ndarray]) -> None:
    """Cross-input checks of the request layout (`input_contract`).

    Every input shares the request axis R; each padded group's tensors
    share one shape [R, W]; its count lies in [min_count, W]; within the
    counts, values are at or above their lower bounds and timestamps are
    sorted and <= request_time; scalar features that travel with a
    history are >= 0. Inputs a signature does not take are skipped.

    Args:
      arrays: input name -> numpy value, each already checked against
        its TensorSpec (`tensor_from_proto`).
    Raises:
      RequestError(INVALID_ARGUMENT): naming the inputs and values.
    """
    batched = {k: v for k, v in arrays.items() if v.ndim >= 1}
    if batched:
        first = min(batched)
        rows = batched[first].shape[0]
        for name in sorted(batched):
            if batched[name].shape[0] != rows:
                raise invalid(
                    f"input {name!r} has {batched[name].shape[0]} requests "
                    f"(shape {list(batched[name].shape)}) but {first!r} has "
                    f"{rows} (shape {list(batched[first].shape)})"
                )
    for group in contract.PADDED_GROUPS:
        present = [name for name in group.tensors if name in arrays]
        for name in present[1:]:
            if arrays[name].shape != arrays[present[0]].shape:
                raise invalid(
                    f"input {name!r} has shape {list(arrays[name].shape)} "
                    f"but {present[0]!r} has "
                    f"{list(arrays[present[0]].shape)}; they must agree"
                )
        valid = _check_counts(arrays, group)
        if valid is not None:
            _check_values(arrays, group, valid)
    if contract.HISTORY.first in arrays:
        scalars = [k for k, v in arrays.items()
                   if v.ndim == 1 and v.dtype.kind in "iu"]
        for name, low in contract.scalar_min_values(scalars).items():
            _check_low(name, arrays[name], low, None)


def _check_counts(arrays: Mapping[str, np.ndarray],
                  group: contract.PaddedGroup) -> np.ndarray | None:
    """Checks the group's count; returns valid [R, W] bool (or None)."""
    count_name, tensor_name = group.count, group.first
    if count_name not in arrays or tensor_name not in arrays:
        return None
    counts, tensor = arrays[count_name], arrays[tensor_name]
    if tensor.ndim != 2 or counts.ndim != 1:
        return None
    low, width = group.min_count, tensor.shape[1]
    if low > 0 and width == 0 and tensor.shape[0] > 0:
        raise invalid(
            f"input {tensor_name!r} holds no {group.name}s (shape "
            f"{list(tensor.shape)}); every request needs at least {low}")
    out = np.flatnonzero((counts < low) | (counts > width))
    if out.size:
        row = int(out[0])
        raise invalid(
            f"input {count_name!r} must lie in [{low}, {width}] (the width "
            f"of {tensor_name!r}, shape {list(tensor.shape)}); got "
            f"{int(counts[row])} for request {row}")
    return np.arange(width)[None, :] < counts[:, None]  # [R, W]


def _check_values(arrays: Mapping[str, np.ndarray],
                  group: contract.PaddedGroup, valid: np.ndarray) -> None:
    """Lower bounds and timestamp order within the counts [R, W]."""
    for name, low in contract.PADDED_MIN_VALUES.items():
        if name in group.tensors and name in arrays:
            _check_low(name, arrays[name], low, valid)
    ts = arrays.get(contract.TIMESTAMPS)
    now = arrays.get(contract.REQUEST_TIME)
    if group is not contract.HISTORY or ts is None:
        return
    later, unsorted = contract.TIMESTAMP_RULES
    if now is not None and now.ndim == 1:
        _refuse_first(contract.TIMESTAMPS, valid & (ts > now[:, None]), ts,
                      later)
    earlier = np.zeros_like(valid)  # [R, N']: older than its predecessor
    earlier[:, 1:] = valid[:, 1:] & (ts[:, 1:] < ts[:, :-1])
    _refuse_first(contract.TIMESTAMPS, earlier, ts, unsorted)


def _check_low(name: str, values: np.ndarray, low: int,
               valid: np.ndarray | None) -> None:
    bad = values < low
    if valid is not None:
        bad &= valid
    _refuse_first(name, bad, values, contract.min_value_rule(name, low))


def _refuse_first(name: str, bad: np.ndarray, values: np.ndarray,
                  rule: str) -> None:
    """RequestError naming the first bad entry's value, request, position."""
    if not bad.any():
        return
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    at = f"request {where[0]}"
    if len(where) == 2:
        at += f", position {where[1]}"
    raise invalid(f"input {name!r}: {rule}; got {values[where]} at {at}")


# ------------------------------------------------------------- messages
def clean_message(text: str) -> str:
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

