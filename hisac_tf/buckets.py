"""The smallest hash-bucket count of an id or time-gap embedding table.

Row 0 of every such table is padding (id 0, no timestamp) and the ids or
gaps go to rows 1..n-1 (`IdHashing`, `RankingEmbedding`), so a table needs
at least two rows. The layers and `hisac_tf.config` check the same rule
with this constant; the module imports nothing from TensorFlow.
"""

from __future__ import annotations

MIN_BUCKETS = 2
