"""Speed and quality benchmarks (docs/performance.md), run from a checkout
as modules, e.g. `python -m benchmarks.serving_cost --tiny`; each writes
JSON under benchmarks/results/ and prints a table."""

import os as _os

# Peak-memory figures (bench_common.peak_bytes) read the CPU allocator's
# statistics, which TensorFlow keeps only with its BFC CPU allocator; the
# variable must be set before TensorFlow loads.
_os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
