"""Behaviour types of the raw logs: pv, cart, fav, buy and their ids 1..4.

The ids are what `hist_behaviors` holds (docs/design.md §4); 0 is padding.
This module imports nothing from TensorFlow, so `hisac_tf.config` can
check behaviour names with it.
"""

from __future__ import annotations

from typing import Any

# Taobao UserBehavior names -> ids (page view, add-to-cart, favourite, buy).
BEHAVIOR_IDS = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}


def is_integer(text: str) -> bool:
    """Whether `text` is a plain ASCII integer such as 12, -3 or +7."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


def behavior_id(value: Any) -> int | None:
    """pv/cart/fav/buy (any case) or 1..4 -> 1..4; None when unknown.

    Example: `behavior_id("Buy") == 4`, `behavior_id("2") == 2`,
    `behavior_id("click") is None`.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, int) or hasattr(value, "__index__"):
        number = int(value)
        return number if 1 <= number <= 4 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip().lower()
    if text in BEHAVIOR_IDS:
        return BEHAVIOR_IDS[text]
    if is_integer(text) and 1 <= int(text) <= 4:
        return int(text)
    return None
