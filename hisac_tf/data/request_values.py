"""`request_values`: one row of a padded request batch as plain values.

The inverse of padding (`FeatureSpec.pad_batch`, docs/design.md §4): row r
of padded inputs becomes the per-request values that
`FeatureSpec.to_example` and `FeatureSpec.impression_examples` take, the
lists cut to `hist_length` / `cand_count`. The export's warmup requests
and the serving client's `predict_examples` calls both build their
impressions through it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from hisac_tf.data.feature_spec import LABEL, TRUE_CTR, FeatureSpec


def request_values(features: Mapping[str, object], r: int) -> dict:
    """Row r of padded requests as plain values (lists cut to length).

    Args:
      features: padded model inputs: scalars [R], hist_* [R, N'] (event
        vectors [R, N', dim]), hist_length [R], cand_* [R, C], cand_count
        [R], declared features [R, M] or [R, dim] (numpy arrays or eager
        tensors).
      r: the row, 0 <= r < R.
    Returns:
      {scalar name: int, float or bytes, hist_*: list of hist_length[r]
      values, cand_* (and labels, true_ctr): list of cand_count[r]
      values, other [R, ...] inputs: row r as a list, hist_length,
      cand_count: int}.
    Raises:
      IndexError: r is not a row of `features`.
    """
    rows = int(np.shape(features["hist_length"])[0])
    if not 0 <= r < rows:
        raise IndexError(f"request row {r} is outside the {rows} rows")
    arrays = {k: np.asarray(v) for k, v in features.items()}
    n, c = int(arrays["hist_length"][r]), int(arrays["cand_count"][r])
    out = {}
    for name, v in arrays.items():
        if v.ndim == 1:  # a scalar per request: int, float or bytes
            value = v[r]
            out[name] = value.item() if isinstance(value, np.generic) else (
                value)
        elif name.startswith("hist_"):  # core and event histories
            out[name] = v[r, :n].tolist()
        elif name.startswith("cand_") or name in (LABEL, TRUE_CTR):
            out[name] = v[r, :c].tolist()
        else:  # multi-valued and vector features
            out[name] = v[r].tolist()
    return out


def impression_examples(features: Mapping[str, object],
                        spec: FeatureSpec) -> list[list[bytes]]:
    """Serialized per-impression tf.Examples of padded requests.

    The examples are `FeatureSpec.impression_example`s (user features, the
    unpadded history, one cand_item_id and cand_category_id), the input of
    the `predict_examples` signature.

    Returns:
      one list per request [R] of its cand_count[r] serialized examples,
      its valid candidates in order.
    """
    rows = int(np.shape(features["hist_length"])[0])
    return [
        [ex.SerializeToString() for ex in
         spec.impression_examples(request_values(features, r))]
        for r in range(rows)
    ]
