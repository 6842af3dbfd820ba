"""Speed and quality benchmarks (docs/performance.md), run from a checkout
as modules, e.g. `python -m benchmarks.serving_cost --tiny`; each writes
JSON under benchmarks/results/ and prints a table."""
