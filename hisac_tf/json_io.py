"""Strict JSON for every file the project writes.

Python's `json` writes NaN and Infinity as the bare tokens `NaN` and
`Infinity`, which are not JSON (RFC 8259): `jq`, JavaScript and most
parsers refuse the whole file. Every writer goes through `dumps` /
`write_json`, which turn a non-finite float (Python or NumPy) into `null`
and then serialise with `allow_nan=False`, so a file is always strict JSON
and a metric that could not be computed reads as null, never as a number.
NumPy scalars and arrays become plain numbers and lists.
"""

from __future__ import annotations

import json
import math
from typing import Any

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, recursively.

    Mappings, lists and tuples are walked; NumPy scalars and arrays become
    Python numbers and lists.
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite_or_none(value)` with `allow_nan=False`."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_json(path: str, value: Any, indent: int = 2,
               sort_keys: bool = False, **kwargs: Any) -> str:
    """Writes `value` as strict JSON (and a newline) to `path`.

    Any filesystem `tf.io.gfile` knows; returns `path`.
    """
    text = dumps(value, indent=indent, sort_keys=sort_keys, **kwargs)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text + "\n")
    return path
