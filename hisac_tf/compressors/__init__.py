"""History compressors behind one interface (docs/design.md §3).

`HistoryCompressor` (history_compressor.py) is the interface; one file per
compressor, each registered by name with `@register_compressor`
(registry.py); `make_compressor(name, ...)` (factory.py) builds one by its
config name and `flops.request_flops` counts its multiply-adds per request
from the class's own `cost(sizes)`.
"""

# factory first: it imports the built-in compressors in registry order.
from hisac_tf.compressors.factory import (
    COMPRESSOR_NAMES,
    compressor_names,
    make_compressor,
    supported_compressors,
)
from hisac_tf.compressors.aggregator_compressor import AggregatorCompressor
from hisac_tf.compressors.compressor_sizes import (
    CompressionCost,
    CompressorSizes,
)
from hisac_tf.compressors.flops import RequestSizes
from hisac_tf.compressors.full_history import FullHistory
from hisac_tf.compressors.hisac_compressor import HiSACCompressor
from hisac_tf.compressors.history_compressor import (
    GROUP_KEYS,
    HistoryCompressor,
)
from hisac_tf.compressors.kmeans_compressor import KMeansCompressor
from hisac_tf.compressors.lsh_compressor import LSHCompressor
from hisac_tf.compressors.patching_compressor import PatchingCompressor
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.compressors.registry import (
    CompressorEntry,
    CompressorValues,
    lookup,
    register_compressor,
)
from hisac_tf.compressors.sim_hard_compressor import SimHardCompressor

__all__ = [
    "AggregatorCompressor",
    "COMPRESSOR_NAMES",
    "CompressionCost",
    "CompressorEntry",
    "CompressorSizes",
    "CompressorValues",
    "FullHistory",
    "GROUP_KEYS",
    "HiSACCompressor",
    "HistoryCompressor",
    "KMeansCompressor",
    "LSHCompressor",
    "PatchingCompressor",
    "RecentCompressor",
    "RequestSizes",
    "SimHardCompressor",
    "compressor_names",
    "lookup",
    "make_compressor",
    "register_compressor",
    "supported_compressors",
]
