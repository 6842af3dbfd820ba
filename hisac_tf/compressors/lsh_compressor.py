"""`LSHCompressor`: SimHash buckets of the semantic latents (docs/design.md §3).

Each valid item with a SID is hashed by b fixed random hyperplanes r_j
(drawn once from `seed`, standard normal, [Ds, b]): code = sum_j
1[z . r_j > 0] 2^j, one of 2^b buckets (SimHash: items at a small angle
share a bucket with high probability). Per user, the A fullest buckets
(ties: the smaller code) are the groups, in that order; items in other
buckets are dropped. Group state = mean ranking embedding h of the
bucket's items; prior = log(count_g / sum over the kept buckets) (the
voting weight with T = 1); no SID.

Needs 2^b >= A, and b <= 16 (a [B, 2^b] count table per batch).
Cost: N x Ds x b multiply-adds for the hashes, N x D additions to pool.
"""

from __future__ import annotations

import numbers

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import MAX_LSH_BITS as MAX_BITS
from hisac_tf.compressors.compressor_sizes import (
    CompressionCost,
    default_num_bits,
)
from hisac_tf.compressors.history_compressor import (
    HistoryCompressor,
    check_non_negative_int,
    check_positive_int,
    log_share,
    pooled_mean,
)
from hisac_tf.compressors.registry import register_compressor


@register_compressor("lsh")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class LSHCompressor(HistoryCompressor):
    """The A fullest SimHash buckets of z as groups.

    Args:
      num_groups: A = G, the buckets kept.
      num_bits: b, hyperplanes (2^b buckets); 2^b >= A, b <= 16.
      latent_dim: Ds, the width of z.
      seed: seed of the hyperplanes (fixed at construction, not trained).

    Reads: latents, has_sid.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments", the LSH baseline.

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = LSHCompressor(num_groups=4, num_bits=3, latent_dim=6)
    groups = compressor(values, valid, latents=tf.random.normal([2, 10, 6]),
                        has_sid=valid)
    groups["group_states"]  # [2, 4, 8]
    ```
    """

    required_inputs = ("latents", "has_sid")

    def __init__(self, num_groups: int, num_bits: int, latent_dim: int,
                 seed: int = 0, **kwargs):
        super().__init__(num_groups=num_groups, **kwargs)
        me = "LSHCompressor"
        self.num_bits = check_positive_int(me, "num_bits", num_bits)
        self.latent_dim = check_positive_int(me, "latent_dim", latent_dim)
        self.seed = check_non_negative_int(me, "seed", seed)
        if self.num_bits > MAX_BITS or 2 ** self.num_bits < self.num_groups:
            raise ValueError(
                f"{me}: `num_bits` must satisfy 2^num_bits >= num_groups "
                f"({self.num_groups}) and num_bits <= {MAX_BITS}; received "
                f"{num_bits!r}"
            )
        rng = np.random.RandomState(self.seed)
        self.hyperplanes = rng.standard_normal(
            (self.latent_dim, self.num_bits)
        ).astype(np.float32)  # [Ds, b]

    @classmethod
    def from_values(cls, values) -> "LSHCompressor":
        return cls(
            values.num_groups,
            num_bits=values.lsh_bits or default_num_bits(values.num_groups),
            latent_dim=values.need("latent_dim"),
            seed=values.seed,
        )

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """b bits: N Ds b for the hashes, N D to pool; bytes: the
        [N, Ds + b] projections and the [N, D] pooling."""
        bits = sizes.lsh_bits or default_num_bits(sizes.a)
        n, d, ds = sizes.n, sizes.d, sizes.ds
        return CompressionCost(groups=sizes.a, macs=n * ds * bits + n * d,
                               bytes=8 * n * (ds + bits) + 8 * n * d)

    def bucket_codes(self, latents) -> tf.Tensor:
        """z [B, N, Ds] -> SimHash codes [B, N] int64 in [0, 2^b)."""
        width = latents.shape[-1]
        if isinstance(width, numbers.Integral) and width != self.latent_dim:
            raise ValueError(
                f"LSHCompressor: `latents` must have Ds = latent_dim = "
                f"{self.latent_dim}; received shape {latents.shape.as_list()}"
            )
        z = tf.stop_gradient(tf.cast(latents, tf.float32))  # [B, N, Ds]
        proj = tf.einsum(
            "bns,sk->bnk", z, tf.constant(self.hyperplanes)
        )  # [B, N, b]
        powers = tf.constant(
            [2 ** j for j in range(self.num_bits)], tf.int64
        )  # [b]
        return tf.reduce_sum(
            tf.cast(proj > 0.0, tf.int64) * powers, axis=-1
        )  # [B, N]

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        member = tf.logical_and(valid, has_sid)  # [B, N]
        code = self.bucket_codes(latents)  # [B, N]
        buckets = 2 ** self.num_bits
        batch = tf.shape(code, out_type=tf.int64)[0]
        dump = batch * buckets
        ids = tf.where(
            member, tf.range(batch)[:, tf.newaxis] * buckets + code, dump
        )  # [B, N]
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(ids, tf.float32), ids, dump + 1
        )[:-1]  # [B * 2^b]
        counts = tf.reshape(counts, tf.stack([batch, buckets]))  # [B, 2^b]
        # Fullest first, ties by smaller code; the inverse permutation
        # gives each bucket's slot.
        order = tf.argsort(-counts, axis=1, stable=True)  # [B, 2^b]
        slot_of_bucket = tf.argsort(order, axis=1, stable=True)  # [B, 2^b]
        item_slot = tf.gather(
            slot_of_bucket, code, batch_dims=1
        )  # [B, N]
        kept = tf.logical_and(member, item_slot < self.num_groups)  # [B, N]
        states, group_counts = pooled_mean(
            values, item_slot, kept, self.num_groups
        )  # [B, A, D], [B, A]
        mask = group_counts > 0  # [B, A]
        group_sids, sid_mask = self.no_sids(values, sids)
        return {
            "group_states": states,
            "group_mask": mask,
            "group_prior": log_share(group_counts, mask),
            "group_sids": group_sids,
            "group_sid_mask": sid_mask,
            "num_active": tf.reduce_sum(tf.cast(mask, tf.int32), axis=1),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_groups=self.num_groups, num_bits=self.num_bits,
            latent_dim=self.latent_dim, seed=self.seed,
        )
        return config
