"""HiSAC models: the RQ-VAE tokenizer and the ranker.

`RQVAE` (docs/design.md §2.1); `HiSACRanker` (§2.2-2.6), embeddings + a
list of branches (`Branch`: `LongTermBranch`, `ShortTermBranch`,
`MatchCountsBranch`) + a head, which read one `EmbeddedHistory` (the
history's fields, each computed on first read); `FeatureEmbeddings`, the
declared features' path into h_i and the head (§4.1); and
`build_model(cfg, feature_spec, tables, item_features)`, where config
meets the model.
"""

from hisac_tf.models.branch import Branch
from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.models.embedded_history import EmbeddedHistory
from hisac_tf.models.feature_embeddings import FeatureEmbeddings
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.models.long_term_branch import LongTermBranch
from hisac_tf.models.match_counts_branch import MatchCountsBranch
from hisac_tf.models.rqvae import RQVAE
from hisac_tf.models.short_term_branch import ShortTermBranch

__all__ = [
    "Branch",
    "EmbeddedHistory",
    "FeatureEmbeddings",
    "HiSACRanker",
    "LongTermBranch",
    "MatchCountsBranch",
    "RQVAE",
    "ShortTermBranch",
    "build_model",
    "build_optimizer",
]
