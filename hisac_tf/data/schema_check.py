"""Schema check of a user's request TFRecords against the config.

docs/design.md §4.1. `hisac-inspect --schema` reads every record of the
given files and names each core field or declared feature that is
missing or has the wrong type or width, with the file and the record
(`path:index`) where it is first seen and how many records share the
problem. The input pipeline uses `record_problems` for its own error
messages, so both say the same.
"""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data.feature_spec import FeatureSpec

_KINDS = {tf.float32: "float_list", tf.string: "bytes_list",
          tf.int64: "int64_list"}


def record_problems(spec: FeatureSpec, example: tf.train.Example,
                    first_only: bool = False) -> list[str]:
    """What in one record breaks the spec's parse spec (missing keys,
    wrong types, wrong widths); [] when nothing does."""
    features = {f.record_key: f for f in spec.request_features}
    core = {key: name for name, key in spec._core_keys().items()}
    feats = example.features.feature
    out = []
    for key, fs in spec.raw_parse_spec().items():
        f = features.get(key)
        if f is not None:
            what = f"feature {f.name!r} (key {key!r})"
        elif core.get(key, key) != key:
            what = f"field {core[key]!r} (key {key!r})"
        else:
            what = f"field {key}"
        if key not in feats:
            if f is not None and f.default is not None:
                continue  # Missing dense values take the default.
            out.append(f"missing {what}")
        else:
            kind = feats[key].WhichOneof("kind")
            want = _KINDS[fs.dtype]
            if kind != want:
                out.append(f"{what} has type {kind}, expected {want}")
            elif isinstance(fs, tf.io.FixedLenFeature):
                n = len(getattr(feats[key], want).value)
                width = int(np.prod(fs.shape)) if fs.shape else 1
                if n != width:
                    out.append(f"{what} must hold {width} value"
                               f"{'s' if width > 1 else ''}, got {n}")
            elif f is not None and f.kind == "vector":
                n = len(feats[key].float_list.value)
                if n % f.dim:
                    out.append(f"{what} must hold dim={f.dim} floats per "
                               f"history item, got {n} values")
        if out and first_only:
            return out
    return out


def check_schema(spec: FeatureSpec, files: Sequence[str],
                 compression: str = "GZIP",
                 max_records: int = 0) -> list[str]:
    """Every distinct problem of `files` against `spec`.

    Returns one line per problem: "<problem>: first in <path>:<index>,
    <k> of <n> records" (n: the records read); [] when all fit. A file
    that cannot be read is a problem line too. `max_records` > 0 reads
    at most that many records per file.
    """
    seen: dict[str, list] = {}
    total = 0
    unreadable = []
    for path in files:
        index = -1
        try:
            records = tf.data.TFRecordDataset(path, compression)
            for index, record in enumerate(records.as_numpy_iterator()):
                if max_records and index >= max_records:
                    break
                total += 1
                example = tf.train.Example.FromString(record)
                for problem in record_problems(spec, example):
                    entry = seen.setdefault(problem, [f"{path}:{index}", 0])
                    entry[1] += 1
        except tf.errors.OpError as e:
            unreadable.append(
                f"{path}: unreadable after record {index} "
                f"({type(e).__name__}; compression {compression!r})")
    lines = [f"{problem}: first in {where}, {count} of {total} records"
             for problem, (where, count) in seen.items()]
    return lines + unreadable
