"""Keras callbacks that keep the RQ-VAE's codebooks alive during `fit`.

docs/design.md §2.1: the codebooks are k-means initialised on the first
batch's residuals, and codes that fall unused are re-seeded.

- `KMeansCodebookInit`: at the start of training, unless the quantiser
  is already initialised (a resumed model), level by level k-means on one
  batch's residuals (`ResidualQuantizer.kmeans_init`).
- `DeadCodeReseed`: at the start of every epoch after the first, codes
  used fewer than `threshold` times over the previous epoch get a random
  residual of one batch (`ResidualQuantizer.reseed_dead_codes`); the
  counts per level are kept in `reseeded` (epoch -> list of L ints).

Both draw their batch from their own iterator over the dataset they are
given (the training dataset, typically), so `fit`'s own iteration is left
alone. Example:

    init = KMeansCodebookInit(ds, iterations=10, seed=0)
    reseed = DeadCodeReseed(ds, threshold=1, seed=0)
    model.fit(ds, epochs=15, callbacks=[init, reseed])
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import tensorflow as tf


class _BatchSource:
    """Endless batches x [B, F] of a dataset, one iterator kept open."""

    def __init__(self, dataset: tf.data.Dataset):
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                "codebook callbacks: dataset must be a tf.data.Dataset of "
                f"x batches, got {type(dataset).__name__}")
        self._dataset = dataset.repeat()
        self._iterator = None

    def next(self) -> tf.Tensor:
        if self._iterator is None:
            self._iterator = iter(self._dataset)
        batch = next(self._iterator)
        return batch[0] if isinstance(batch, (tuple, list)) else batch


class KMeansCodebookInit(tf.keras.callbacks.Callback):
    """k-means initialisation of the codebooks before the first step.

    Args:
      dataset: tf.data.Dataset of x batches [B, F].
      iterations: Lloyd iterations per level (>= 0).
      seed: seed of the k-means++ draws.
    """

    def __init__(self, dataset: tf.data.Dataset, iterations: int = 10,
                 seed: int = 0):
        super().__init__()
        if isinstance(iterations, bool) or int(iterations) != iterations \
                or iterations < 0:
            raise ValueError(
                "KMeansCodebookInit: iterations must be an integer >= 0, "
                f"got {iterations!r}")
        self._source = _BatchSource(dataset)
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.ran = False

    def on_train_begin(self, logs=None):
        if bool(self.model.quantizer.initialized.numpy()):
            return  # resumed or initialised by hand: keep the codebooks
        self.model.initialize_codebooks(
            self._source.next(), self.iterations, seed=self.seed)
        self.ran = True


class DeadCodeReseed(tf.keras.callbacks.Callback):
    """Re-seeds dead codes at the start of every epoch after the first.

    Args:
      dataset: tf.data.Dataset of x batches [B, F].
      threshold: a code is dead when used fewer than `threshold` times
        over the previous epoch.
      seed: the draws of epoch e use seed + e.
    """

    def __init__(self, dataset: tf.data.Dataset, threshold: int = 1,
                 seed: int = 0):
        super().__init__()
        if isinstance(threshold, bool) or int(threshold) != threshold \
                or threshold < 0:
            raise ValueError(
                "DeadCodeReseed: threshold must be an integer >= 0, got "
                f"{threshold!r}")
        self._source = _BatchSource(dataset)
        self.threshold = int(threshold)
        self.seed = int(seed)
        self.reseeded: dict[int, list] = {}

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0 or self.threshold == 0:
            return
        self.reseeded[epoch] = self.model.reseed_dead_codes(
            self._source.next(), self.threshold, seed=self.seed + epoch)
