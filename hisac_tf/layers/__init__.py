"""HiSAC layers: one paper component per file.

The public layers (docs/design.md §2):

    ResidualQuantizer      the RQ-VAE's L-level residual quantiser (§2.1)
    HierarchicalVoting     SID-tree voting -> sparse interest agents (§2.2)
    SoftRoutingAttention   history items -> agent states (§2.3)
    AgentTargetAttention   candidates attend over agent states (§2.4)
    IdHashing              raw int64 ids -> embedding rows, in graph
    RankingEmbedding       the learned item representation h_i
    SemanticIdLookup       frozen item -> (SID, z) tables, prototypes
    SidEmbedding           learned embeddings of SID paths
    HistoryMatchCounts     per-candidate counts of matching behaviours (§2.6)
    CategoricalFeatureEmbedding  a declared categorical feature's table
                           (hashed or vocabulary, int64 or strings) (§4.1)
    DenseFeatureTransform  a raw dense feature's in-graph transform (§4.1)
    ItemFeatureLookup      the item table's features by item id (§4.1)
"""

from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.categorical_feature_embedding import (
    CategoricalFeatureEmbedding,
)
from hisac_tf.layers.dense_feature_transform import DenseFeatureTransform
from hisac_tf.layers.hierarchical_voting import HierarchicalVoting
from hisac_tf.layers.history_match_counts import HistoryMatchCounts
from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.layers.item_feature_lookup import ItemFeatureLookup
from hisac_tf.layers.ranking_embedding import RankingEmbedding
from hisac_tf.layers.residual_quantizer import ResidualQuantizer
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.layers.sid_embedding import SidEmbedding
from hisac_tf.layers.soft_routing_attention import SoftRoutingAttention

__all__ = [
    "AgentTargetAttention",
    "CategoricalFeatureEmbedding",
    "DenseFeatureTransform",
    "HierarchicalVoting",
    "HistoryMatchCounts",
    "IdHashing",
    "ItemFeatureLookup",
    "RankingEmbedding",
    "ResidualQuantizer",
    "SemanticIdLookup",
    "SidEmbedding",
    "SoftRoutingAttention",
]
