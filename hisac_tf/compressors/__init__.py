"""History compressors behind one interface (DESIGN §3).

`HistoryCompressor` (history_compressor.py) is the interface; one file per
compressor; `make_compressor(name, ...)` builds one by its config name
and `flops.request_flops` counts its multiply-adds per request.
"""

from hisac_tf.compressors.factory import (  # noqa: F401
    COMPRESSOR_NAMES,
    FULL_LENGTH,
    make_compressor,
)
from hisac_tf.compressors.history_compressor import (  # noqa: F401
    GROUP_KEYS,
    HistoryCompressor,
)
