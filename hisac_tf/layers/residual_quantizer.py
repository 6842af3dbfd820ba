"""`ResidualQuantizer`, re-exported: it lives in the tokenizer package.

See `hisac_tf.tokenizer.residual_quantizer` (docs/design.md §2.1); the
layers package keeps the name so the public layers API lists it.
"""

from hisac_tf.tokenizer.residual_quantizer import ResidualQuantizer, kmeans

__all__ = ["ResidualQuantizer", "kmeans"]
