"""Codebook callbacks and EpochFigures inside the RQ-VAE's `fit`."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.tokenizer.codebook_callbacks import (
    DeadCodeReseed,
    KMeansCodebookInit,
)
from hisac_tf.tokenizer.epoch_figures import EpochFigures
from hisac_tf.tokenizer.rqvae import RQVAE


def _setup(batches=4):
    x = np.random.default_rng(0).normal(size=(32 * batches, 6)).astype(
        np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(32)
    model = RQVAE(6, 3, [8], [6, 4], seed=0)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    return model, ds


def test_kmeans_init_runs_before_the_first_step():
    model, ds = _setup()
    init = KMeansCodebookInit(ds, iterations=5, seed=0)
    before = model.quantizer.codebooks[0].numpy().copy()
    model.fit(ds, epochs=1, verbose=0, callbacks=[init])
    assert init.ran and bool(model.quantizer.initialized.numpy())
    assert not np.allclose(model.quantizer.codebooks[0].numpy(), before)


def test_kmeans_init_keeps_an_initialised_model():
    model, ds = _setup()
    model.initialize_codebooks(next(iter(ds)), seed=3)
    init = KMeansCodebookInit(ds, iterations=5, seed=0)
    model.fit(ds, epochs=1, verbose=0, callbacks=[init])
    assert not init.ran


def test_reseed_after_every_epoch_but_the_first(tmp_path):
    model, ds = _setup()
    reseed = DeadCodeReseed(ds, threshold=10_000, seed=0)  # all dead
    figures = EpochFigures(3, reseed, str(tmp_path / "tb"))
    model.fit(ds, epochs=3, verbose=0,
              callbacks=[KMeansCodebookInit(ds), reseed, figures])
    assert sorted(reseed.reseeded) == [1, 2]
    assert reseed.reseeded[1] == [6, 4]
    rows = figures.history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["reseeded_codes"] == [0, 0]
    assert rows[2]["reseeded_codes"] == [6, 4]
    for row in rows:
        assert {"loss", "reconstruction_loss", "commitment_loss",
                "latent_rms", "prototype_rms"} <= set(row)
        # Usage counts cover one epoch: 4 batches of 32 items.
        assert [u["level"] for u in row["code_usage"]] == [1, 2]
        assert 0 < row["code_usage"][0]["fraction_used"] <= 1
        assert 1 <= row["code_usage"][0]["perplexity"] <= 6
    counts = model.quantizer.usage_counts[0].numpy()
    assert counts.sum() == 128
    assert any(name.startswith("events.out.tfevents")
               for name in os.listdir(tmp_path / "tb"))


@pytest.mark.parametrize("make,match", [
    pytest.param(lambda ds: KMeansCodebookInit(ds, iterations=-1),
                 "iterations.*-1", id="init_iterations"),
    pytest.param(lambda ds: DeadCodeReseed(ds, threshold=-2),
                 "threshold.*-2", id="reseed_threshold"),
])
def test_bad_arguments(make, match):
    _, ds = _setup(1)
    with pytest.raises(ValueError, match=match):
        make(ds)


def test_dataset_must_be_a_dataset():
    with pytest.raises(TypeError, match="tf.data.Dataset.*ndarray"):
        KMeansCodebookInit(np.zeros((4, 6)))
