"""HiSAC models: the RQ-VAE tokenizer and the ranker.

`RQVAE` (docs/design.md §2.1), `HiSACRanker` (§2.2-2.6) and
`build_model(cfg, feature_spec, tables)`, where config meets the model.
"""

from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.models.rqvae import RQVAE

__all__ = [
    "HiSACRanker",
    "RQVAE",
    "build_model",
    "build_optimizer",
]
