"""`EpochFigures`: the tokenizer's per-epoch figures, JSON and TensorBoard.

After every epoch of the RQ-VAE's `fit` it records one row: the epoch's
mean losses (loss, reconstruction_loss, commitment_loss), the latent and
prototype scales (latent_rms, prototype_rms: sqrt of the mean square of z
and of the codeword sums zhat), code usage per level over the epoch
(fraction of codes used, perplexity; from the quantiser's usage counts)
and the codes re-seeded at the epoch's start. The rows go to `history`
(the tokenizer report keeps them), to a TensorBoard log directory when
one is given, and one line per epoch to stderr when `progress`.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import sys
import time

import tensorflow as tf

from hisac_tf.tokenizer.codebook_callbacks import DeadCodeReseed
from hisac_tf.tokenizer.quality_report import usage_of_counts


class EpochFigures(tf.keras.callbacks.Callback):
    """Records the per-epoch figures of an RQVAE's `fit`.

    Args:
      epochs: the number of epochs (for the progress line).
      reseed: the DeadCodeReseed callback of the same fit, if any.
      log_dir: TensorBoard directory ("" or None: none written).
      progress: print one line per epoch to stderr.
    """

    def __init__(self, epochs: int, reseed: DeadCodeReseed | None = None,
                 log_dir: str | None = None, progress: bool = False):
        super().__init__()
        self.epochs = int(epochs)
        self.reseed = reseed
        self.log_dir = log_dir or None
        self.progress = bool(progress)
        self.history: list[dict] = []
        self._writer = None
        self._began = 0.0

    def on_train_begin(self, logs=None):
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        usage = [
            {"level": level + 1, **usage_of_counts(counts.numpy())}
            for level, counts in enumerate(
                self.model.quantizer.usage_counts)
        ]
        reseeded = [0] * len(usage)
        if self.reseed is not None:
            reseeded = self.reseed.reseeded.get(epoch, reseeded)
        row = {
            "epoch": epoch + 1,
            **{k: float(v) for k, v in (logs or {}).items()},
            "code_usage": [
                {k: u[k] for k in ("level", "fraction_used", "perplexity")}
                for u in usage],
            "reseeded_codes": list(reseeded),
            "seconds": round(time.time() - self._began, 3),
        }
        self.history.append(row)
        if self._writer is not None:
            self._write(epoch + 1, row)
        if self.progress:
            print(
                f"  epoch {epoch + 1}/{self.epochs}: loss "
                f"{row.get('loss', float('nan')):.4f} (reconstruction "
                f"{row.get('reconstruction_loss', float('nan')):.4f}, "
                f"commitment {row.get('commitment_loss', float('nan')):.4f})"
                f", latent rms {row.get('latent_rms', float('nan')):.3f}, "
                f"prototype rms {row.get('prototype_rms', float('nan')):.3f}"
                f", re-seeded {reseeded}, {row['seconds']:.1f} s",
                file=sys.stderr, flush=True)

    def _write(self, step: int, row: dict) -> None:
        with self._writer.as_default():
            for key, value in row.items():
                if isinstance(value, float) and key != "seconds":
                    tf.summary.scalar(f"tokenizer/{key}", value, step=step)
            for u, count in zip(row["code_usage"], row["reseeded_codes"]):
                level = u["level"]
                tf.summary.scalar(f"tokenizer/usage_level_{level}",
                                  u["fraction_used"], step=step)
                tf.summary.scalar(f"tokenizer/perplexity_level_{level}",
                                  u["perplexity"], step=step)
                tf.summary.scalar(f"tokenizer/reseeded_level_{level}",
                                  count, step=step)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
