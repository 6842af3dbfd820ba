"""`ResidualQuantizer`: the L-level residual quantiser of the RQ-VAE.

docs/design.md §2.1. With codebooks E^1..E^L (E^l is [K_l, Ds]):

    r_0 = z
    c_l = argmin_k ||r_{l-1} - E^l_k||^2      (ties: smaller k)
    r_l = r_{l-1} - E^l_{c_l}
    zhat = sum_l E^l_{c_l}
    quantized = z + stop_gradient(zhat - z)  (straight-through estimator)
    commitment_loss = mean over the batch of
        sum_l ( ||sg(r_{l-1}) - E^l_{c_l}||^2
                + beta ||r_{l-1} - sg(E^l_{c_l})||^2 )

Distances are ||r||^2 + ||E||^2 - 2 r.E (one [B, Ds] x [Ds, K] matmul per
level). Quantisation runs in float32 whatever the compute dtype.

Gradient paths: the codebook term trains the codebooks only; the
commitment term (beta) trains the encoder only, through r_{l-1}. The
residual chain r_l = r_{l-1} - E^l_{c_l} is followed with the codeword
held constant (sg), so a later level's commitment term does not pull the
earlier levels' codewords: each codebook learns from its own level's
codebook term, as in the usual RQ-VAE implementations. Loss values are
exactly those of the formula above.

Codebook updates (`codebook_update`):
- "gradient" (default): the codebook term trains the codebooks through
  the optimiser, as above.
- "ema": the codebooks are not trainable; every `call(..., training=True)`
  moves them to the exponential moving average (decay `ema_decay` = d) of
  the residuals assigned to each code (van den Oord et al. 2017,
  appendix A.1). With n_k the batch's count of code k and s_k the sum of
  its residuals r_{l-1}, and N_k the running count (1 after an
  initialisation or re-seed):
      N_k <- d N_k + (1 - d) n_k
      E_k <- E_k + (1 - d) (s_k - n_k E_k) / N_k
  which is E_k = S_k / N_k for the running sum S_k <- d S_k + (1 - d) s_k
  (a code with no residual keeps its codeword). The loss keeps its value;
  its codebook term then has no trainable variable to reach.

Codebook maintenance (eager, outside the training step):
- `kmeans_init(z)`: level by level, k-means (k-means++ seeding, a few
  Lloyd iterations, seeded) on the batch's residuals r_{l-1}.
- Usage: every `call(..., training=True)` adds each code's count in the
  batch to `usage_counts` (non-trainable [K_l] per level).
- `reseed_dead_codes(z, threshold)`: codes whose usage count since the
  last reseed is < threshold get a random residual r_{l-1} of `z`'s batch
  as their new codeword; the counts then restart from zero.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from typing import Sequence

import numpy as np
import tensorflow as tf

CODEBOOK_UPDATES = ("gradient", "ema")
_EMA_EPS = 1e-5


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class ResidualQuantizer(tf.keras.layers.Layer):
    """Greedy residual vector quantisation with L codebooks.

    Args:
      codebook_sizes: K_l of each of the L levels, each >= 1.
      latent_dim: Ds, the width of z and of every codeword.
      beta: weight of the commitment term (>= 0), 0.25 in the paper.
      codebook_update: "gradient" or "ema" (see the module docstring).
      ema_decay: d in [0, 1) of the "ema" update.

    Call args:
      z: latents [B, Ds].
      training: when True, the codes' usage counts are updated.

    Returns:
      dict(codes [B, L] int32, quantized [B, Ds] (straight-through, z's
      dtype), zhat [B, Ds] float32, commitment_loss [] float32 (codebook
      plus beta-weighted commitment terms, batch mean), residual_norms
      [B, L] float32 (||r_l||, l = 1..L)).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Semantic ID tokenizer" (RQ-VAE, residual quantisation).

    Example:

    ```python
    quantizer = ResidualQuantizer(codebook_sizes=(8, 4), latent_dim=3)
    out = quantizer(tf.random.normal([16, 3]))  # z [B=16, Ds=3]
    out["codes"].shape  # [16, 2]: the semantic ID (c_1, c_2) per item
    ```
    """

    def __init__(
        self,
        codebook_sizes: Sequence[int],
        latent_dim: int,
        beta: float = 0.25,
        codebook_update: str = "gradient",
        ema_decay: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        sizes = list(codebook_sizes) if codebook_sizes is not None else []
        if not sizes or any(
            isinstance(k, bool) or int(k) != k or k < 1 for k in sizes
        ):
            raise ValueError(
                "ResidualQuantizer: codebook_sizes must be a non-empty list "
                f"of positive integers, got {codebook_sizes!r}"
            )
        if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim \
                or latent_dim < 1:
            raise ValueError(
                "ResidualQuantizer: latent_dim must be a positive integer, "
                f"got {latent_dim!r}"
            )
        if not beta >= 0:
            raise ValueError(
                f"ResidualQuantizer: beta must be >= 0, got {beta!r}"
            )
        if codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(
                "ResidualQuantizer: codebook_update must be one of "
                f"{list(CODEBOOK_UPDATES)}, got {codebook_update!r}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(
                f"ResidualQuantizer: ema_decay must be in [0, 1), got "
                f"{ema_decay!r}"
            )
        self.codebook_sizes = tuple(int(k) for k in sizes)
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.codebook_update = codebook_update
        self.ema_decay = float(ema_decay)
        self._codebooks = []
        self._usage = []
        self._ema_counts = []

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is not None and (
            input_shape.rank != 2 or
            input_shape[-1] not in (None, self.latent_dim)
        ):
            raise ValueError(
                "ResidualQuantizer: z must have shape [B, Ds] with Ds = "
                f"latent_dim = {self.latent_dim}, received shape "
                f"{input_shape.as_list()}"
            )
        scale = 1.0 / np.sqrt(self.latent_dim)
        for level, k in enumerate(self.codebook_sizes):
            self._codebooks.append(self.add_weight(
                name=f"codebook_{level}",
                shape=[k, self.latent_dim],
                dtype=tf.float32,
                initializer=tf.keras.initializers.RandomNormal(
                    stddev=scale, seed=level),
                trainable=self.codebook_update == "gradient",
                # Quantisation runs in float32 under mixed precision too.
                experimental_autocast=False,
            ))
            self._usage.append(self.add_weight(
                name=f"usage_{level}",
                shape=[k],
                dtype=tf.float32,
                initializer="zeros",
                trainable=False,
            ))
            if self.codebook_update == "ema":
                self._ema_counts.append(self.add_weight(
                    name=f"ema_counts_{level}", shape=[k], dtype=tf.float32,
                    initializer="ones", trainable=False))
        self.initialized = self.add_weight(
            name="initialized", shape=[], dtype=tf.bool,
            initializer="zeros", trainable=False,
        )
        super().build(input_shape)

    @property
    def codebooks(self) -> list:
        """The L codebook variables E^l, each [K_l, Ds] float32."""
        return list(self._codebooks)

    @property
    def usage_counts(self) -> list:
        """Per level, [K_l] counts of each code since the last reseed."""
        return list(self._usage)

    # ------------------------------------------------------------- forward
    def call(self, z, training=None):
        """See the class docstring: z [B, Ds] -> dict of outputs."""
        out_dtype = z.dtype
        r = tf.cast(z, tf.float32)  # [B, Ds]
        z32 = r
        codes, norms, chosen = [], [], []
        codebook_term = tf.constant(0.0, tf.float32)
        commit_term = tf.constant(0.0, tf.float32)
        for level, book in enumerate(self._codebooks):
            code = _nearest(r, book)  # [B] int32
            e = tf.gather(book, code)  # [B, Ds]
            r_prev = tf.stop_gradient(r)  # [B, Ds] r_{l-1}
            codebook_term += tf.reduce_mean(tf.reduce_sum(
                tf.square(tf.stop_gradient(r) - e), axis=-1))
            commit_term += tf.reduce_mean(tf.reduce_sum(
                tf.square(r - tf.stop_gradient(e)), axis=-1))
            r = r - tf.stop_gradient(e)  # [B, Ds] r_l
            codes.append(code)
            chosen.append(e)
            norms.append(tf.norm(r, axis=-1))  # [B]
            if training:
                k = self.codebook_sizes[level]
                counts = tf.math.unsorted_segment_sum(
                    tf.ones_like(code, tf.float32), code, k)  # [K_l]
                self._usage[level].assign_add(counts)
                if self.codebook_update == "ema":
                    self._ema_update(level, r_prev, code, counts)
        zhat = tf.add_n(chosen)  # [B, Ds]
        quantized = z32 + tf.stop_gradient(zhat - z32)  # [B, Ds]
        return {
            "codes": tf.stack(codes, axis=-1),  # [B, L]
            "quantized": tf.cast(quantized, out_dtype),
            "zhat": zhat,
            "commitment_loss": codebook_term + self.beta * commit_term,
            "residual_norms": tf.stack(norms, axis=-1),  # [B, L]
        }

    def _ema_update(self, level, r, code, counts):
        """EMA step of level `level`'s codebook from residuals r [B, Ds]."""
        k = self.codebook_sizes[level]
        d = self.ema_decay
        book = self._codebooks[level]
        n_k = self._ema_counts[level]
        sums = tf.math.unsorted_segment_sum(r, code, k)  # [K, Ds]
        n_k.assign(d * n_k + (1.0 - d) * counts)  # [K]
        step = (1.0 - d) * (sums - counts[:, tf.newaxis] * book) / \
            tf.maximum(n_k, _EMA_EPS)[:, tf.newaxis]  # [K, Ds]
        book.assign_add(step)

    def _set_codewords(self, level, centres, rows=None) -> None:
        """Writes codewords (all, or `rows`); their EMA counts restart at 1."""
        self._codebooks[level].assign(centres.astype(np.float32))
        if self.codebook_update != "ema":
            return
        counts = self._ema_counts[level].numpy()
        counts[slice(None) if rows is None else rows] = 1.0
        self._ema_counts[level].assign(counts)

    def quantize(self, z) -> tuple:
        """Codes [B, L] int32 and zhat [B, Ds] of z [B, Ds] (no gradients)."""
        r = tf.cast(z, tf.float32)  # [B, Ds]
        codes, zhat = [], tf.zeros_like(r)
        for book in self._codebooks:
            code = _nearest(r, book)  # [B]
            e = tf.gather(book, code)  # [B, Ds]
            r -= e
            zhat += e
            codes.append(code)
        return tf.stack(codes, axis=-1), zhat  # [B, L], [B, Ds]

    # -------------------------------------------------------- maintenance
    def kmeans_init(self, z, iterations: int = 10, seed: int = 0) -> None:
        """Initialises every codebook by k-means on z's residuals.

        Level l runs k-means++ seeding and `iterations` Lloyd steps on
        r_{l-1} of the batch, then r_l = r_{l-1} - E^l_{c_l} feeds level
        l + 1. Eager only. Resets the usage counts.

        Args:
          z: latents [B, Ds] of one batch (B >= 1).
          iterations: Lloyd iterations per level (>= 0).
          seed: numpy seed of the k-means++ draws.
        """
        r = _as_points(self, z)
        if iterations < 0:
            raise ValueError(
                f"kmeans_init: iterations must be >= 0, got {iterations}"
            )
        rng = np.random.default_rng(seed)
        for level, (book, usage) in enumerate(
                zip(self._codebooks, self._usage)):
            centres = kmeans(r, book.shape[0], iterations, rng)  # [K, Ds]
            self._set_codewords(level, centres)
            usage.assign(tf.zeros_like(usage))
            r = r - centres[_nearest_np(r, centres)]  # [B, Ds]
        self.initialized.assign(True)

    def reseed_dead_codes(
        self, z, threshold: int = 1, seed: int = 0
    ) -> list:
        """Re-seeds codes used fewer than `threshold` times; resets counts.

        Level by level (earlier levels first, so later residuals use the
        repaired codebooks), each dead code of level l gets a distinct
        random residual r_{l-1} of z's batch (drawn with replacement only
        if the batch has fewer rows than dead codes). Eager only.

        Args:
          z: latents [B, Ds] of the current batch.
          threshold: a code is dead when its usage count < threshold.
          seed: numpy seed of the draws.
        Returns:
          the number of codes re-seeded at each level (list of L ints).
        """
        r = _as_points(self, z)
        rng = np.random.default_rng(seed)
        reseeded = []
        for level, (book, usage) in enumerate(
                zip(self._codebooks, self._usage)):
            centres = book.numpy().astype(np.float64)  # [K, Ds]
            dead = np.flatnonzero(usage.numpy() < threshold)
            if dead.size:
                rows = rng.choice(
                    r.shape[0], size=dead.size,
                    replace=dead.size > r.shape[0],
                )
                centres[dead] = r[rows]
                self._set_codewords(level, centres, dead)
            usage.assign(tf.zeros_like(usage))
            reseeded.append(int(dead.size))
            r = r - centres[_nearest_np(r, centres)]  # [B, Ds]
        return reseeded

    def get_config(self):
        return {
            **super().get_config(),
            "codebook_sizes": list(self.codebook_sizes),
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "codebook_update": self.codebook_update,
            "ema_decay": self.ema_decay,
        }


def _nearest(r: tf.Tensor, book: tf.Variable) -> tf.Tensor:
    """argmin_k ||r - E_k||^2 via ||r||^2 + ||E||^2 - 2 r.E; [B] int32."""
    dist = (
        tf.reduce_sum(tf.square(r), axis=-1, keepdims=True)  # [B, 1]
        + tf.reduce_sum(tf.square(book), axis=-1)[tf.newaxis, :]  # [1, K]
        - 2.0 * tf.matmul(r, book, transpose_b=True)  # [B, K]
    )
    return tf.argmin(dist, axis=-1, output_type=tf.int32)  # [B]


def _as_points(layer: ResidualQuantizer, z) -> np.ndarray:
    if not layer.built:
        layer.build(tf.TensorShape([None, layer.latent_dim]))
    points = np.asarray(z, np.float64)
    if points.ndim != 2 or points.shape[1] != layer.latent_dim or \
            points.shape[0] < 1:
        raise ValueError(
            "ResidualQuantizer: z must be a non-empty [B, Ds] batch with "
            f"Ds = {layer.latent_dim}, received shape {list(points.shape)}"
        )
    return points


def _sq_dist_np(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[B, K] squared distances ||p||^2 + ||c||^2 - 2 p.c (clipped >= 0)."""
    d = (
        np.sum(points * points, axis=1)[:, None]  # [B, 1]
        + np.sum(centres * centres, axis=1)[None, :]  # [1, K]
        - 2.0 * points @ centres.T  # [B, K]
    )
    return np.maximum(d, 0.0)


def _nearest_np(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin(_sq_dist_np(points, centres), axis=1)  # [B]


def kmeans(
    points: np.ndarray, k: int, iterations: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding then `iterations` Lloyd steps; returns [k, Ds].

    With fewer distinct points than k, the remaining centres copy points
    (they are then re-seeded as dead codes during training). A cluster
    that empties during Lloyd takes the point farthest from its centre.
    """
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]), np.float64)
    centres[0] = points[rng.integers(n)]
    closest = _sq_dist_np(points, centres[:1])[:, 0]  # [B]
    for j in range(1, k):
        total = closest.sum()
        if total > 0:
            pick = rng.choice(n, p=closest / total)
        else:
            pick = rng.integers(n)
        centres[j] = points[pick]
        closest = np.minimum(
            closest, _sq_dist_np(points, centres[j:j + 1])[:, 0])
    for _ in range(iterations):
        dist = _sq_dist_np(points, centres)  # [B, K]
        assign = np.argmin(dist, axis=1)  # [B]
        counts = np.bincount(assign, minlength=k)  # [K]
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, points)  # [K, Ds]
        used = counts > 0
        centres[used] = sums[used] / counts[used, None]
        empty = np.flatnonzero(~used)
        if empty.size:
            err = dist[np.arange(n), assign]  # [B]
            far = np.argsort(-err, kind="stable")[: empty.size]
            centres[empty[: far.size]] = points[far]
    return centres
