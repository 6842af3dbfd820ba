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
        (a string counts its own bytes once per element it fills: one
        1 MB value declared [1024] is 1 GiB)
    predict_examples: every example's history width (the examples are
        decoded, not parsed by the graph)  <= max_history_multiple x N

and a work budget (a small request may still declare much work):

    R x C   candidates scored               <= max_scored_candidates
    R x N'  history items received          <= max_history_items

(predict_examples: B candidates, B x its widest history). Unset, they
are sized from the served version: max_requests x its exported C (the
SavedModel's `max_candidates`) and max_requests x its exported N, the
work of max_requests requests of the shape the model was trained on.

A dimension limit broken -> INVALID_ARGUMENT; the byte and work budgets
-> RESOURCE_EXHAUSTED; each names the input (or the budget), its
declared shape and the limit. Defaults come from the config's `export`
section (`RequestLimits.from_config`).
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
OPTIONAL = ("max_scored_candidates", "max_history_items")
EXAMPLES = "examples"
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
      max_scored_candidates: R x C per call; None: max_requests x the
        served version's exported C.
      max_history_items: R x N' per call; None: max_requests x the
        served version's exported N.
    """

    max_history_multiple: int = 4
    max_candidates: int = 1024
    max_requests: int = 1024
    max_request_bytes: int = 64 * MiB
    max_scored_candidates: int | None = None
    max_history_items: int | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in OPTIONAL:
                continue
            if (not isinstance(value, int) or isinstance(value, bool)
                    or value < 1):
                raise ValueError(
                    f"RequestLimits.{field.name} must be an int >= 1"
                    + (" or None" if field.name in OPTIONAL else "")
                    + f", got {value!r}")

    @classmethod
    def from_config(cls, export_cfg) -> "RequestLimits":
        """From `Config.export` (max_history_multiple, max_candidates,
        max_requests, max_request_mb, max_scored_candidates and
        max_history_items, 0 meaning sized from the served version)."""
        return cls(
            max_history_multiple=export_cfg.max_history_multiple,
            max_candidates=export_cfg.max_candidates,
            max_requests=export_cfg.max_requests,
            max_request_bytes=int(export_cfg.max_request_mb * MiB),
            max_scored_candidates=(
                export_cfg.max_scored_candidates or None),
            max_history_items=export_cfg.max_history_items or None,
        )

    def work_budgets(self, max_history: int | None,
                     max_candidates: int | None) -> dict:
        """Budget name -> (limit or None, where the limit comes from).

        Args:
          max_history, max_candidates: the served version's exported N
            and C (None: unknown; that budget is then unbounded unless
            set).
        """
        out = {}
        for name, unit, exported in (
            ("max_scored_candidates", "C", max_candidates),
            ("max_history_items", "N", max_history),
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = (value, f"{name} = {value}")
            elif exported:
                value = self.max_requests * exported
                out[name] = (value, (
                    f"{name} = {value}: max_requests {self.max_requests} "
                    f"x the exported {unit} = {exported}"))
            else:
                out[name] = (None, f"{name} unbounded")
        return out


def declared_bytes(proto) -> int | None:
    """Bytes the TensorProto would take once materialised, from its
    declared shape and dtype only (None: dtype or shape unusable; the
    per-input checks refuse it with their own message).

    A string tensor costs a reference per element plus its strings'
    bytes; one string value filling a shape of E elements (proto
    semantics) counts E times.
    """
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        return None
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        return None
    elements = math.prod(dims)
    if dtype != tf.string:
        return elements * max(dtype.size, 1)
    strings = proto.string_val
    if len(strings) == 1 and elements > 1:
        own = elements * len(strings[0])  # One value fills the shape.
    else:
        own = sum(len(x) for x in strings)
    return elements * STRING_ELEMENT_BYTES + own


def check_declared(inputs: Mapping[str, object], limits: RequestLimits,
                   max_history: int | None,
                   max_candidates: int | None = None) -> int:
    """Checks the declared shapes of a request's inputs; returns bytes.

    Args:
      inputs: input name -> TensorProto (a PredictRequest's `inputs`).
      limits: the server's `RequestLimits`.
      max_history: the served version's N (None: unknown, no N' limit).
      max_candidates: the served version's exported C (None: unknown).
    Raises:
      RequestError: INVALID_ARGUMENT (a dimension limit) or
        RESOURCE_EXHAUSTED (the byte or a work budget), naming the
        input or the budget, the declared shape and the limit.
    """
    total = 0
    work = {"C": None, "N'": None}  # Declared [R, width] of each group.
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
            if group is contract.HISTORY:
                _check_history_width(name, dims, width, limits,
                                     max_history)
                work["N'"] = (dims[0], width)
            if group is contract.CANDIDATES:
                work["C"] = (dims[0], width)
                if width > limits.max_candidates:
                    raise _refuse(
                        grpc.StatusCode.INVALID_ARGUMENT, name, dims,
                        f"C = {width} candidates, more than "
                        f"max_candidates = {limits.max_candidates}")
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
    if EXAMPLES in inputs and len(inputs) == 1:
        rows, widths = _example_widths(inputs[EXAMPLES], limits,
                                       max_history)
        work["C"] = (rows, 1)
        work["N'"] = (rows, max(widths, default=0))
    _check_work(work, limits.work_budgets(max_history, max_candidates))
    return total


def _check_history_width(name: str, dims: list[int], width: int,
                         limits: RequestLimits,
                         max_history: int | None) -> None:
    if max_history is None:
        return
    cap = limits.max_history_multiple * max_history
    if width > cap:
        raise _refuse(
            grpc.StatusCode.INVALID_ARGUMENT, name, dims,
            f"history width N' = {width}, more than max_history_multiple "
            f"x N = {limits.max_history_multiple} x {max_history} = {cap} "
            "(the newest N items are kept anyway)")


def _example_widths(proto, limits: RequestLimits,
                    max_history: int | None) -> tuple[int, list[int]]:
    """(B, history width of each example) of a `predict_examples` input,
    decoded here (bounded by the byte budget, checked first) so that a
    wide history is refused before the graph parses and pads it.

    An entry that does not decode is left to the graph, which refuses it
    naming the entry.
    """
    dims = [d.size for d in proto.tensor_shape.dim]
    rows = dims[0] if dims else 1
    strings = list(proto.string_val)
    if len(strings) == 1 and rows > 1:
        strings = strings * rows  # One value fills the shape.
    widths = []
    for index, data in enumerate(strings):
        try:
            example = tf.train.Example.FromString(data)
        except Exception:  # Not a tf.Example: the graph names it.
            continue
        features = example.features.feature
        width = max((len(features[k].int64_list.value)
                     for k in contract.HISTORY.tensors
                     if k in features), default=0)
        widths.append(width)
        try:
            _check_history_width(EXAMPLES, dims, width, limits, max_history)
        except RequestError as e:
            raise RequestError(e.code, f"{e.message}; entry {index}") from None
    return rows, widths


def _check_work(work: dict, budgets: dict) -> None:
    """RESOURCE_EXHAUSTED naming the work budget a request exceeds."""
    for unit, name, what in (
        ("C", "max_scored_candidates", "candidates to score"),
        ("N'", "max_history_items", "history items"),
    ):
        declared = work[unit]
        limit, source = budgets[name]
        if declared is None or limit is None:
            continue
        rows, width = declared
        if rows * width > limit:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"work budget {name} exceeded: R x {unit} = {rows} x "
                f"{width} = {rows * width} {what}, more than {source}; "
                "split the call")


def _refuse(code: grpc.StatusCode, name: str, dims: list[int],
            text: str) -> RequestError:
    return RequestError(code,
                        f"input {name!r} declares shape {dims}: {text}")
