"""`KMeansCompressor`: per-user k-means of the semantic latents
(docs/design.md §3).

In graph, vectorised over the batch (all users' Lloyd steps run as one
batched computation; the Python loop is over the fixed iteration count).
Over a user's n valid items WITH a SID (latents z [N, Ds]):

  * init: m = min(A, n) centroids, centroid j = z of the item of rank
    floor(j * n / m) among those items (oldest first): spread evenly over
    the user's history, deterministic;
  * `iterations` Lloyd steps: assign each item to the nearest active
    centroid (squared Euclidean as ||c||^2 + ||z||^2 - 2 c.z; ties: the
    smaller centroid index), then move each centroid to the mean of its
    items (a centroid left with no item stays where it is);
  * a final assignment to the final centroids defines the groups.

Group state = mean ranking embedding h of the group's items; group mask =
non-empty group; prior = log(count_g / n) (the voting weight with T = 1,
so HiSAC and k-means get the same kind of prior); no SID.

Cost per Lloyd step: A x N x Ds multiply-adds for the distances plus
N x Ds additions for the update; the routing tensor is [B, A, N] as in
soft routing (never [B, A, N, Ds]).
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.history_compressor import (
    HistoryCompressor,
    check_non_negative_int,
    log_share,
    pooled_mean,
)
from hisac_tf.compressors.registry import register_compressor


@register_compressor("kmeans")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class KMeansCompressor(HistoryCompressor):
    """Per-user k-means clusters of z as groups.

    Args:
      num_clusters: A = G.
      iterations: Lloyd steps (>= 0; 0: assign to the initial centroids).

    Reads: latents, has_sid.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments", the K-Means baseline.

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = KMeansCompressor(num_clusters=4, iterations=3)
    groups = compressor(values, valid, latents=tf.random.normal([2, 10, 6]),
                        has_sid=valid)
    groups["group_states"]  # [2, 4, 8]
    ```
    """

    required_inputs = ("latents", "has_sid")

    def __init__(self, num_clusters: int, iterations: int = 5, **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_groups=num_clusters, **kwargs)
        self.num_clusters = self.num_groups
        self.iterations = check_non_negative_int(
            "KMeansCompressor", "iterations", iterations
        )

    @classmethod
    def from_values(cls, values) -> "KMeansCompressor":
        return cls(values.num_groups, iterations=values.kmeans_iterations)

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """I iterations: N Ds + (I + 1) (A Ds + A N Ds) for assignments,
        I N Ds for centroid updates (segment sums), N D for the group
        means of h; bytes: distances, argmin and one-hot per iteration
        over [A, N], and the [N, D] pooling."""
        n, a, d, ds = sizes.n, sizes.a, sizes.d, sizes.ds
        i = sizes.kmeans_iterations
        return CompressionCost(
            groups=a,
            macs=n * ds + (i + 1) * (a * ds + a * n * ds) + i * n * ds
            + n * d,
            bytes=(i + 1) * 8 * a * n * 3 + 8 * n * d)

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        member = tf.logical_and(valid, has_sid)  # [B, N]
        z = tf.stop_gradient(tf.cast(latents, tf.float32))  # [B, N, Ds]
        centroids, active = self.initial_centroids(z, member)
        zz = tf.reduce_sum(tf.square(z), axis=-1)  # [B, N]
        for _ in range(self.iterations):
            assign = self.assign(z, zz, centroids, active)  # [B, N]
            means, counts = pooled_mean(
                z, assign, member, self.num_clusters
            )  # [B, A, Ds], [B, A]
            centroids = tf.where(
                (counts > 0)[:, :, tf.newaxis], means, centroids
            )  # [B, A, Ds]
        assign = self.assign(z, zz, centroids, active)  # [B, N]
        states, counts = pooled_mean(
            values, assign, member, self.num_clusters
        )  # [B, A, D], [B, A]
        mask = counts > 0  # [B, A]
        group_sids, sid_mask = self.no_sids(values, sids)
        return {
            "group_states": states,
            "group_mask": mask,
            "group_prior": log_share(counts, mask),  # [B, A]
            "group_sids": group_sids,
            "group_sid_mask": sid_mask,
            "num_active": tf.reduce_sum(tf.cast(mask, tf.int32), axis=1),
        }

    def initial_centroids(self, z, member):
        """Evenly spaced member items: ([B, A, Ds], active [B, A] bool)."""
        a = self.num_clusters
        n = tf.reduce_sum(tf.cast(member, tf.int64), axis=1)  # [B]
        m = tf.minimum(n, a)  # [B]
        j = tf.range(a, dtype=tf.int64)[tf.newaxis, :]  # [1, A]
        rank = (j * n[:, tf.newaxis]) // tf.maximum(
            m, 1
        )[:, tf.newaxis]  # [B, A] floor(j * n / m), 0-based
        ranks = tf.cumsum(tf.cast(member, tf.int64), axis=1)  # [B, N]
        pos = tf.searchsorted(ranks, rank + 1, side="left")  # [B, A]
        active = j < m[:, tf.newaxis]  # [B, A]
        length = tf.shape(z)[1]
        pos = tf.where(active, pos, length)  # [B, A] -> zero row if off
        shape = tf.shape(z)
        padded = tf.concat(
            [z, tf.zeros(tf.stack([shape[0], 1, shape[2]]), z.dtype)], 1
        )  # [B, N + 1, Ds]
        return tf.gather(padded, pos, batch_dims=1), active  # [B, A, Ds]

    def assign(self, z, zz, centroids, active):
        """Nearest active centroid per item, ties to the smaller index.

        z [B, N, Ds], zz [B, N], centroids [B, A, Ds], active [B, A]
        -> [B, N] int64 (0 for a user without an active centroid).
        """
        cc = tf.reduce_sum(tf.square(centroids), axis=-1)  # [B, A]
        cz = tf.einsum("bas,bns->ban", centroids, z)  # [B, A, N]
        dist = (
            cc[:, :, tf.newaxis] + zz[:, tf.newaxis, :] - 2.0 * cz
        )  # [B, A, N]
        dist = tf.where(active[:, :, tf.newaxis], dist, tf.float32.max)
        best = tf.reduce_min(dist, axis=1, keepdims=True)  # [B, 1, N]
        index = tf.range(
            self.num_clusters, dtype=tf.int64
        )[tf.newaxis, :, tf.newaxis]  # [1, A, 1]
        first = tf.where(
            tf.equal(dist, best), index, self.num_clusters
        )  # [B, A, N]
        return tf.minimum(
            tf.reduce_min(first, axis=1), self.num_clusters - 1
        )  # [B, N]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_clusters=self.num_clusters, iterations=self.iterations
        )
        return config
