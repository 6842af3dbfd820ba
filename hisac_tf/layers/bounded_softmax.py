"""Softmax against an upper bound of the row maximum, with an exact
fallback: the shared trick of the lean attention and routing layers.

A softmax needs exp(l - m) with m >= max(l) so that nothing overflows; the
usual m = max(l) costs a pass over the logits (a reduction) and another for
the subtraction. Where a cheap upper bound m' of every row's maximum is
known in advance (Cauchy-Schwarz for attention, 0 for minus a squared
distance), the subtraction folds into the logits' matmul (one more column)
and the softmax is a single elementwise pass, exp, while its normaliser
s = sum exp(l - m') comes out of the second matmul (a column of ones beside
the values). The result is exact whatever m' is, as long as the terms that
matter do not underflow: every valid row has s >= exp(max l - m'), so if
s >= exp(-UNDERFLOW_MARGIN) for every valid row, no term within
87 - UNDERFLOW_MARGIN of its row's maximum was lost (float32 exp
underflows below about -87), i.e. nothing above exp(-47) ~ 4e-21 relative.
Otherwise (the bound was loose by more than the margin for some row) the
caller recomputes with the exact row maximum, through `tf.cond` (a core
op that stock TF Serving runs), so the fast path costs no accuracy.

docs/design.md §2.3, §2.4.
"""

from __future__ import annotations

import math

import tensorflow as tf

# s >= exp(-UNDERFLOW_MARGIN) on every valid row: the bound was tight enough.
UNDERFLOW_MARGIN = 40.0


def bound_is_tight(sums, row_valid) -> tf.Tensor:
    """Scalar bool: every valid row's sum of exp(l - m') is large enough.

    Args:
      sums: float32 row sums s, any shape.
      row_valid: bool broadcastable to `sums`, True for a row with at
        least one valid entry (others are ignored: their sum is 0 or
        arbitrary and their output is zeroed by the caller).
    """
    floor = math.exp(-UNDERFLOW_MARGIN)
    ok = tf.logical_or(tf.logical_not(row_valid), sums >= floor)
    return tf.reduce_all(ok)


def safe_sums(sums):
    """The row sums with 0 replaced by 1, so that dividing the (zero)
    weighted sum of a row without valid entries gives 0, not NaN."""
    return tf.where(sums > 0.0, sums, tf.ones_like(sums))
