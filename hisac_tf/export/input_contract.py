"""The input contract of the serving signatures, as one table.

docs/design.md §6. Read by the graph's own checks
(`hisac_tf.export.signatures.ServingModule`, as `tf.debugging.Assert`s
that TF Serving reports as INVALID_ARGUMENT) and by the development
server's request checks (`serving/request_checks.py`, in numpy before the
graph runs), so that both refuse the same requests with the same rule
text. Names come from `hisac_tf.data.feature_spec`; dtypes and ranks from
`FeatureSpec.input_signature()` (the signatures' input specs).

    group        tensors [R, W]                 count [R]    valid counts
    history      hist_item_ids, hist_category_  hist_length  [0, N']
                 ids, hist_behaviors, hist_
                 timestamps
    candidates   cand_item_ids,                 cand_count   [1, C]
                 cand_category_ids

Within the first `count` entries of a row: item ids >= 1, category ids
and behaviours >= 0 (0 = unknown), timestamps sorted oldest first and
<= request_time. Scalar features (user_id, user features) >= 0, except
request_time. Entries past the count are padding, whatever they hold.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from hisac_tf.data.feature_spec import CANDIDATE_FEATURES, HISTORY_FEATURES

REQUEST_TIME = "request_time"
TIMESTAMPS = "hist_timestamps"


@dataclasses.dataclass(frozen=True)
class PaddedGroup:
    """Tensors [R, W] of one shape, valid in each row's first `count`.

    Attributes:
      name: the group in messages ("history", "candidate").
      count: the per-request length input, [R] int32.
      tensors: the padded [R, W] int64 inputs; the first names the width.
      min_count: the smallest valid count (the largest is W).
      width: W's symbol in messages (N', C).
    """

    name: str
    count: str
    tensors: tuple[str, ...]
    min_count: int
    width: str

    @property
    def first(self) -> str:
        return self.tensors[0]

    def count_rule(self) -> str:
        """The rule a count outside [min_count, W] breaks."""
        text = (f"{self.count} must be in [{self.min_count}, {self.width}] "
                f"({self.width} = the width of {self.first}")
        if self.min_count > 0:
            text += f"; an empty {self.name} list is an error"
        return text + ")"


HISTORY = PaddedGroup("history", "hist_length", HISTORY_FEATURES, 0, "N'")
CANDIDATES = PaddedGroup("candidate", "cand_count", CANDIDATE_FEATURES, 1,
                         "C")
PADDED_GROUPS = (HISTORY, CANDIDATES)
COUNT_INPUTS = tuple(g.count for g in PADDED_GROUPS)
CANDIDATE_INPUTS = CANDIDATE_FEATURES + (CANDIDATES.count,)

# The smallest valid value of each padded input within its count; 0 is
# padding for the ids, "unknown" for categories and behaviours.
PADDED_MIN_VALUES = {
    "hist_item_ids": 1,
    "hist_category_ids": 0,
    "hist_behaviors": 0,
    "cand_item_ids": 1,
    "cand_category_ids": 0,
}
SCALAR_MIN_VALUE = 0  # user_id and user features; 0 = unknown.
TIMESTAMP_RULES = (
    f"{TIMESTAMPS} must be <= {REQUEST_TIME}",
    f"{TIMESTAMPS} must be sorted oldest first",
)


def group_of(name: str) -> PaddedGroup | None:
    """The padded group holding input `name`, or None for a scalar."""
    for group in PADDED_GROUPS:
        if name in group.tensors:
            return group
    return None


def scalar_min_values(scalar_features: Sequence[str]) -> dict[str, int]:
    """Scalar input -> smallest valid value (request_time is free).

    Args:
      scalar_features: `FeatureSpec.scalar_features`, or the rank-1
        inputs of a signature other than the counts.
    """
    return {
        name: SCALAR_MIN_VALUE for name in scalar_features
        if name != REQUEST_TIME and name not in COUNT_INPUTS
    }


def min_value_rule(name: str, low: int) -> str:
    """The rule a value of `name` below `low` breaks."""
    group = group_of(name)
    if group is None or not low:
        return f"{name} must be >= {low}"
    return (f"{name} must be >= {low} in the first {group.count} entries "
            "of each row (0 is padding)")
