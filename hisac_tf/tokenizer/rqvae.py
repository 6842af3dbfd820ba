"""`RQVAE`: the item tokenizer of docs/design.md §2.1.

    x [B, F] --standardise--> encoder MLP --latent norm--> z [B, Ds]
      --ResidualQuantizer--> codes [B, L], zhat, quantized (straight-through)
      --decoder MLP--> xhat [B, F] (back in x's units)

    loss = ||x' - xhat'||^2 + commitment_loss        (batch means)

where x' = (x - mean) / scale is the standardised content embedding (the
model holds `input_mean` and `input_scale` as non-trainable weights, set by
`set_input_normalization`; identity by default) and xhat' the decoder's
output in that space. Standardising keeps the reconstruction term on the
same footing for content encoders of any output scale (CLIP-like unit
vectors have per-dimension spreads of a few hundredths, which would let
the commitment term shrink z towards zero).

Latent normalisation (`latent_norm`) keeps the scale of z fixed, so the
commitment term cannot grow with it and the routing distances of soft
routing keep their meaning (docs/design.md §2.3):
- "none": z is the encoder's output.
- "rms": z = y / sqrt(mean_d y_d^2 + eps), every ||z||^2 = Ds.
- "layer": z = (y - mean_d y) / sqrt(var_d y + eps) (layer norm with no
  learned scale or offset), every ||z||^2 = Ds, z centred across dims.

`train_step` makes `fit`/`train_on_batch` work with a dataset of x
batches; the codebooks are k-means initialised with
`initialize_codebooks(x)` before the first step, and dead codes re-seeded
with `reseed_dead_codes(x, threshold)` between epochs (the Keras callbacks
of `hisac_tf.tokenizer.codebook_callbacks` do both inside `fit`). The
metrics are the losses, `latent_rms` = sqrt(mean z^2) and
`prototype_rms` = sqrt(mean zhat^2) (zhat: the codeword sums), batch
means over the epoch.

Example:

    model = RQVAE(content_dim=32, latent_dim=16, hidden_dims=[64],
                  codebook_sizes=[32, 16], latent_norm="rms")
    model.initialize_codebooks(x_first_batch)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    model.fit(dataset_of_x_batches, epochs=15)
    codes = model.tokenize(x)["codes"]  # [B, 2]
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from typing import Sequence

import numpy as np
import tensorflow as tf

from hisac_tf.layers.residual_quantizer import ResidualQuantizer

LATENT_NORMS = ("none", "rms", "layer")
_NORM_EPS = 1e-6


def _mlp(dims: Sequence[int], out_dim: int, name: str, seed: int):
    layers = [
        tf.keras.layers.Dense(
            d, activation="relu", name=f"{name}_hidden_{i}",
            kernel_initializer=tf.keras.initializers.GlorotUniform(
                seed=seed + i),
        )
        for i, d in enumerate(dims)
    ]
    layers.append(tf.keras.layers.Dense(
        out_dim, name=f"{name}_out",
        kernel_initializer=tf.keras.initializers.GlorotUniform(
            seed=seed + len(dims)),
    ))
    return tf.keras.Sequential(layers, name=name)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class RQVAE(tf.keras.Model):
    """Encoder MLP, residual quantiser, decoder MLP.

    Args:
      content_dim: F, width of the content embedding x.
      latent_dim: Ds, width of z and of the codewords.
      hidden_dims: encoder hidden widths (the decoder mirrors them).
      codebook_sizes: K_l of each of the L levels.
      beta: commitment weight (0.25).
      seed: seed of the dense layers' initialisers.
      latent_norm: "none", "rms" or "layer" (module docstring).
      codebook_update: "gradient" or "ema" (`ResidualQuantizer`).
      ema_decay: decay of the "ema" codebook update.

    Call returns dict(z [B, Ds], codes [B, L] int32, zhat [B, Ds],
    xhat [B, F], commitment_loss [], reconstruction_loss [] (batch mean of
    ||x' - xhat'||^2 in standardised units)).
    """

    def __init__(
        self,
        content_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int],
        codebook_sizes: Sequence[int],
        beta: float = 0.25,
        seed: int = 0,
        latent_norm: str = "none",
        codebook_update: str = "gradient",
        ema_decay: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("content_dim", content_dim), ("latent_dim", latent_dim)
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"RQVAE: {name} must be a positive integer, got "
                    f"{value!r}"
                )
        hidden = list(hidden_dims)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ValueError(
                f"RQVAE: hidden_dims must be positive integers, got "
                f"{hidden_dims!r}"
            )
        if latent_norm not in LATENT_NORMS:
            raise ValueError(
                f"RQVAE: latent_norm must be one of {list(LATENT_NORMS)}, "
                f"got {latent_norm!r}"
            )
        self.latent_norm = latent_norm
        self.content_dim = int(content_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = tuple(int(h) for h in hidden)
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.beta = float(beta)
        self.seed = int(seed)
        self.encoder = _mlp(self.hidden_dims, self.latent_dim, "encoder",
                            seed)
        self.decoder = _mlp(tuple(reversed(self.hidden_dims)),
                            self.content_dim, "decoder", seed + 100)
        self.quantizer = ResidualQuantizer(
            self.codebook_sizes, self.latent_dim, beta=self.beta,
            codebook_update=codebook_update, ema_decay=ema_decay,
            name="quantizer",
        )
        self.input_mean = self.add_weight(
            name="input_mean", shape=[self.content_dim],
            initializer="zeros", trainable=False)
        self.input_scale = self.add_weight(
            name="input_scale", shape=[self.content_dim],
            initializer="ones", trainable=False)
        self._trackers = {
            name: tf.keras.metrics.Mean(name)
            for name in ("loss", "reconstruction_loss", "commitment_loss",
                         "latent_rms", "prototype_rms")
        }
        self.build_all()

    def build_all(self) -> None:
        """Creates every weight (so checkpoints restore without a call)."""
        self.encoder.build([None, self.content_dim])
        self.decoder.build([None, self.latent_dim])
        self.quantizer.build([None, self.latent_dim])

    @property
    def metrics(self):
        return list(self._trackers.values())

    def set_input_normalization(self, mean, scale) -> None:
        """Sets the standardisation x' = (x - mean) / scale ([F] each)."""
        mean = np.asarray(mean, np.float32)
        scale = np.asarray(scale, np.float32)
        for name, arr in (("mean", mean), ("scale", scale)):
            if arr.shape != (self.content_dim,):
                raise ValueError(
                    f"RQVAE.set_input_normalization: {name} must have shape "
                    f"[{self.content_dim}], got {list(arr.shape)}"
                )
        if not np.all(scale > 0):
            raise ValueError(
                "RQVAE.set_input_normalization: scale must be > 0, got "
                f"min {scale.min()!r}"
            )
        self.input_mean.assign(mean)
        self.input_scale.assign(scale)

    def standardize(self, x) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        return (x - self.input_mean) / self.input_scale  # [B, F]

    def normalize_latent(self, y) -> tf.Tensor:
        """The `latent_norm` of encoder outputs y [B, Ds]."""
        if self.latent_norm == "none":
            return y
        y = tf.cast(y, tf.float32)
        if self.latent_norm == "layer":
            y = y - tf.reduce_mean(y, axis=-1, keepdims=True)
        mean_sq = tf.reduce_mean(tf.square(y), axis=-1, keepdims=True)
        return y * tf.math.rsqrt(mean_sq + _NORM_EPS)  # [B, Ds]

    def encode(self, x, training=None) -> tf.Tensor:
        """z [B, Ds] of content embeddings x [B, F]."""
        return self.normalize_latent(
            self.encoder(self.standardize(x), training=training))

    def call(self, x, training=None):
        x_std = self.standardize(x)  # [B, F]
        z = self.normalize_latent(
            self.encoder(x_std, training=training))  # [B, Ds]
        q = self.quantizer(z, training=training)
        xhat_std = self.decoder(q["quantized"], training=training)  # [B, F]
        recon = tf.reduce_mean(tf.reduce_sum(
            tf.square(x_std - tf.cast(xhat_std, tf.float32)), axis=-1))
        return {
            "z": z,
            "codes": q["codes"],
            "zhat": q["zhat"],
            "xhat": xhat_std * self.input_scale + self.input_mean,
            "commitment_loss": q["commitment_loss"],
            "reconstruction_loss": recon,
        }

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            out = self(x, training=True)
            loss = out["reconstruction_loss"] + out["commitment_loss"]
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update_trackers(loss, out)

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        out = self(x, training=False)
        loss = out["reconstruction_loss"] + out["commitment_loss"]
        return self._update_trackers(loss, out)

    def _update_trackers(self, loss, out):
        self._trackers["loss"].update_state(loss)
        for name in ("reconstruction_loss", "commitment_loss"):
            self._trackers[name].update_state(out[name])
        for name, t in (("latent_rms", out["z"]),
                        ("prototype_rms", out["zhat"])):
            self._trackers[name].update_state(tf.sqrt(tf.reduce_mean(
                tf.square(tf.cast(t, tf.float32)))))
        return {k: t.result() for k, t in self._trackers.items()}

    def tokenize(self, x) -> dict:
        """Inference: codes [B, L], z [B, Ds], and per-item squared errors.

        Returns dict(codes, z, sq_error [B] = ||x - xhat||^2 through the
        quantiser, sq_error_unquantized [B] = the same decoding z itself),
        errors in x's own units.
        """
        x = tf.cast(x, tf.float32)
        z = self.encode(x, training=False)  # [B, Ds]
        codes, zhat = self.quantizer.quantize(z)  # [B, L], [B, Ds]

        def sq_err(latent):
            xhat = self.decoder(latent, training=False)  # [B, F]
            xhat = tf.cast(xhat, tf.float32) * self.input_scale \
                + self.input_mean
            return tf.reduce_sum(tf.square(x - xhat), axis=-1)  # [B]

        return {
            "codes": codes,
            "z": z,
            "sq_error": sq_err(zhat),
            "sq_error_unquantized": sq_err(z),
        }

    def initialize_codebooks(
        self, x, iterations: int = 10, seed: int = 0
    ) -> None:
        """k-means initialisation of the codebooks on one batch x [B, F]."""
        z = self.encode(x, training=False)
        self.quantizer.kmeans_init(z.numpy(), iterations, seed)

    def reseed_dead_codes(
        self, x, threshold: int = 1, seed: int = 0
    ) -> list:
        """Re-seeds dead codes from residuals of batch x [B, F]."""
        z = self.encode(x, training=False)
        return self.quantizer.reseed_dead_codes(z.numpy(), threshold, seed)

    def get_config(self):
        return {
            "content_dim": self.content_dim,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "codebook_sizes": list(self.codebook_sizes),
            "beta": self.beta,
            "seed": self.seed,
            "latent_norm": self.latent_norm,
            "codebook_update": self.quantizer.codebook_update,
            "ema_decay": self.quantizer.ema_decay,
            "name": self.name,
        }
