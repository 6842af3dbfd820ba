"""Request loading: JSON request files -> padded numpy model inputs.

docs/design.md §6. A JSON request file holds one request object, or a
list of them (R requests). A request has one field per input of the
served model's `serving_default` signature (`serving.model_schema`,
read from the server's metadata), except the counts (hist_length,
cand_count, any `<p>_length`), which are filled from the lists:

    rank 1  [R]         one value:             "user_id": 7
    rank 2  [R, X]      a list:                "hist_item_ids": [5, 6]
    rank 3  [R, X, Y]   a list of lists:       "hist_tags": [[1, 2], [3]]

Values follow the input's dtype: integers for int inputs, numbers for
float inputs, strings for string inputs (sent as UTF-8 bytes). Ragged
lists are padded to the widest (or to the signature's fixed width) with
0, 0.0 or b""; a float list of a fixed width (a dense vector) must fill
it. Lists of one padded
group (hist_*, cand_*) must have equal lengths within a request;
histories are oldest first, and when the schema has a `max_history`
they keep their newest `max_history` items, as training does. A field
the model does not take, or an input the request lacks, is an error
naming it (and the file).

Only numpy and json here: a client that loads JSON requests does not
import TensorFlow or the input pipeline. Request-level TFRecord files
are read by `serving.tfrecord_requests` (whose `load_request` takes
either kind of file).
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np

from serving.model_schema import CANDIDATE_PREFIX, InputSpec, ModelSchema


def as_schema(schema) -> ModelSchema:
    """A `ModelSchema`, or one built from a `FeatureSpec` (offline)."""
    if isinstance(schema, ModelSchema):
        return schema
    if hasattr(schema, "input_signature"):
        return ModelSchema.from_feature_spec(schema)
    raise TypeError(
        f"expected a ModelSchema or a FeatureSpec, got {type(schema)}")


def request_from_dict(request: Mapping[str, object],
                      schema) -> dict[str, np.ndarray]:
    """One request's plain values -> padded model inputs with R = 1."""
    return requests_from_dicts([request], schema)


def requests_from_dicts(requests: Sequence[Mapping[str, object]],
                        schema) -> dict[str, np.ndarray]:
    """R requests' plain values -> padded model inputs [R, ...].

    Args:
      requests: one mapping per request (see the module docstring).
      schema: the served model's `ModelSchema` (or a `FeatureSpec`).
    Raises:
      ValueError: naming the request, the field and what is wrong.
    """
    schema = as_schema(schema)
    if not requests:
        raise ValueError("no request given")
    specs = schema.request_inputs
    counts = {g.count: g for g in schema.groups}
    rows: dict[str, list] = {name: [] for name in specs}
    for r, request in enumerate(requests):
        where = "request" if len(requests) == 1 else f"request {r}"
        if not isinstance(request, Mapping):
            raise ValueError(
                f"{where} must be a JSON object of fields, got "
                f"{type(request).__name__}")
        values = _one_request(request, schema, counts, where)
        for name, value in values.items():
            rows[name].append(value)
    return {name: _stack(specs[name], rows[name]) for name in specs}


def _one_request(request, schema: ModelSchema, counts, where) -> dict:
    """Field values of one request (nested lists, unpadded) + counts."""
    specs = schema.request_inputs
    unknown = sorted(set(request) - set(specs))
    if unknown:
        raise ValueError(
            f"{where} has field(s) {unknown} that the model"
            f"{schema.version_note()} does not take; its inputs are "
            f"{sorted(specs)}")
    missing = [n for n in specs if n not in request and n not in counts]
    if missing:
        raise ValueError(
            f"{where} is missing field {missing[0]!r} "
            f"({specs[missing[0]].describe()})"
            + (f" and {missing[1:]}" if missing[1:] else ""))
    out = {}
    for name, spec in specs.items():
        if name in counts:
            continue
        out[name] = _nested(spec, request[name], spec.rank, where)
    for count, group in counts.items():
        lengths = {name: len(out[name]) for name in group.members}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"{where}: the lists counted by {count!r} must have equal "
                f"lengths, got {lengths}")
        n = next(iter(lengths.values()))
        if count in request:
            given = request[count]
            if isinstance(given, bool) or given != n:
                raise ValueError(
                    f"{where}: field {count!r} is {given!r} but its lists "
                    f"have {n} entries (leave it out: it is filled from "
                    "the lists)")
        keep = schema.max_history
        if group.keeps_newest and keep is not None and n > keep:
            for name in group.members:
                out[name] = out[name][n - keep:]  # The newest `keep`.
            n = keep
        out[count] = n
    return out


def _nested(spec: InputSpec, value, rank: int | None, where: str):
    """`value` checked to be nested lists of depth rank - 1 (the request
    axis is the batch): a scalar for rank 1, a list for rank 2, ..."""
    depth = 0 if rank is None else rank - 1

    def walk(v, d, path):
        if d == 0:
            if isinstance(v, (list, tuple, dict)):
                raise ValueError(
                    f"{where}: field {spec.name!r} must be "
                    f"{_wanted(spec)}, got {_short(v)}{_at(path)}")
            return _scalar(spec, v, where, path)
        if not isinstance(v, (list, tuple)):
            raise ValueError(
                f"{where}: field {spec.name!r} must be {_wanted(spec)}, "
                f"got {_short(v)}{_at(path)}")
        return [walk(x, d - 1, f"{path}[{i}]") for i, x in enumerate(v)]

    return walk(value, depth, "")


def _wanted(spec: InputSpec) -> str:
    """"an integer", "a list of strings", "a list of lists of numbers"."""
    one, many = {"int": ("an integer", "integers"),
                 "float": ("a number", "numbers"),
                 "string": ("a string", "strings"),
                 "bool": ("a boolean", "booleans")}[spec.kind]
    rank = spec.rank or 1
    if rank == 1:
        return f"{one} ({spec.describe()})"
    return ("a list of " + "lists of " * (rank - 2) + many
            + f" ({spec.describe()})")


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar(spec: InputSpec, v, where: str, path: str):
    kind = spec.kind
    ok = {
        "int": isinstance(v, (int, np.integer)) and not isinstance(v, bool),
        "float": isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool),
        "string": isinstance(v, (str, bytes)),
        "bool": isinstance(v, (bool, np.bool_)),
    }[kind]
    if not ok:
        word = {"int": "integer", "float": "number", "string": "string",
                "bool": "boolean"}[kind]
        raise ValueError(
            f"{where}: field {spec.name!r} must hold {word} values "
            f"({spec.dtype}), got {_short(v)}{_at(path)}")
    if kind == "string" and isinstance(v, str):
        return v.encode("utf-8")
    if kind == "int":
        info = np.iinfo(spec.numpy_dtype)
        if not info.min <= v <= info.max:
            raise ValueError(
                f"{where}: field {spec.name!r} holds {v}{_at(path)}, "
                f"outside {spec.dtype}")
    return v


def _stack(spec: InputSpec, rows: list) -> np.ndarray:
    """R rows of nested lists -> one padded array of the input's dtype.

    Each list axis is as wide as its widest list, or as the signature's
    fixed width: int and string lists are padded up to it, float lists
    (dense vectors) must fill it.
    """
    rank = spec.rank if spec.rank is not None else 1
    shape = [len(rows)]
    level = rows
    for axis in range(1, rank):
        lengths = [len(x) for x in level]
        width = max(lengths, default=0)
        fixed = spec.shape[axis]
        if fixed is not None:
            exact = spec.kind == "float"
            bad = [n for n in lengths if n > fixed or (exact and n != fixed)]
            if bad:
                raise ValueError(
                    f"field {spec.name!r} ({spec.describe()}) takes "
                    f"{'exactly' if exact else 'at most'} {fixed} values "
                    f"on axis {axis}, got a list of {bad[0]}")
            width = fixed
        shape.append(width)
        level = [y for x in level for y in x]
    out = np.full(shape, spec.pad_value, spec.numpy_dtype)
    _fill(out, rows, ())
    return out


def _fill(out: np.ndarray, rows: list, index: tuple) -> None:
    for i, row in enumerate(rows):
        if isinstance(row, list):
            _fill(out, row, index + (i,))
        else:
            out[index + (i,)] = row


# ------------------------------------------------------------------ files
def read_json_request(path: str) -> list:
    """The request objects of a JSON file (one object or a list of them).

    Needs no server: callers check a file before they connect.

    Raises:
      FileNotFoundError: naming the file.
      ValueError: naming the file: not valid JSON (truncated, not UTF-8),
        or not an object or a non-empty list of objects.
    """
    try:
        if "://" in path:  # gs://, s3://: TensorFlow's file systems.
            import tensorflow as tf
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such request file {path!r}") from None
    try:
        request = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not a JSON request: byte {e.start} is not UTF-8"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not a valid JSON request ({e.msg} at line "
            f"{e.lineno}, column {e.colno}; is the file truncated?)"
        ) from None
    if isinstance(request, dict):
        request = [request]
    if not isinstance(request, list) or not request:
        raise ValueError(
            f"{path}: expected one JSON object (a request) or a non-empty "
            f"list of them, got {type(request).__name__}")
    return request


def request_from_json(path: str, schema) -> dict[str, np.ndarray]:
    """The request(s) of a JSON file (one object or a list of them).

    Raises:
      FileNotFoundError: naming the file.
      ValueError: naming the file: not valid JSON (truncated, not UTF-8),
        not an object or a list of objects, or a bad field.
    """
    request = read_json_request(path)
    try:
        return requests_from_dicts(request, schema)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def split_request(features: Mapping[str, np.ndarray],
                  schema: ModelSchema | None = None) -> tuple[dict, dict]:
    """(user-side features, candidate features) of padded inputs: by the
    schema's signatures, or without one, the candidate inputs are those
    named cand_*."""
    if schema is not None:
        return schema.split(features)
    user = {k: v for k, v in features.items()
            if not k.startswith(CANDIDATE_PREFIX)}
    cands = {k: v for k, v in features.items()
             if k.startswith(CANDIDATE_PREFIX)}
    return user, cands
