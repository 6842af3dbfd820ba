"""Argument and static shape checks shared by the layers.

Errors name the layer, the argument or tensor, and what was received.
"""

from __future__ import annotations

import numbers


def check_int(owner: str, name: str, value, minimum: int) -> int:
    """`value` as an int >= `minimum`, else a ValueError naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        raise ValueError(f"{owner}: `{name}` must be an int >= {minimum}; "
                         f"received {value!r}")
    return int(value)


def check_rank(layer: str, name: str, tensor, rank: int, letters: str):
    """Raises if `tensor`'s known rank is not `rank` ([letters])."""
    shape = tensor.shape
    if shape.rank is not None and shape.rank != rank:
        raise ValueError(
            f"{layer}: `{name}` must have shape [{letters}] (rank {rank}); "
            f"received shape {shape.as_list()}"
        )


def check_dim(layer, name, tensor, axis, letter, ref_name, ref, ref_axis):
    """Raises if two known dimensions that must agree differ."""
    got = tensor.shape[axis]
    want = ref.shape[ref_axis]
    if got is not None and want is not None and got != want:
        raise ValueError(
            f"{layer}: `{name}` has {letter} = {got} (shape "
            f"{tensor.shape.as_list()}) but `{ref_name}` has {letter} = "
            f"{want} (shape {ref.shape.as_list()})"
        )
