"""Sums the count dictionaries of the pipeline's steps (nested ok)."""

from __future__ import annotations

from typing import Any, Mapping

import apache_beam as beam


def add_counts(total: dict, counts: Mapping[str, Any]) -> dict:
    """Adds `counts` into `total` in place: numbers sum, dicts recurse."""
    for key, value in counts.items():
        if isinstance(value, Mapping):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


class SumCounts(beam.CombineFn):
    """{name: number or nested dict} elements -> their sum."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, counts: Mapping[str, Any]) -> dict:
        return add_counts(acc, counts)

    def merge_accumulators(self, accs) -> dict:
        total: dict = {}
        for acc in accs:
            add_counts(total, acc)
        return total

    def extract_output(self, acc: dict) -> dict:
        return acc
