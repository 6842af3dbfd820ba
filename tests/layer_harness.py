"""One shared harness for every hisac_tf layer.

`check_layer(factory, inputs)` runs the checks every layer must pass:
config round trip, build, call (finite output), one training step (when the
layer has trainable weights and a float output) and save/load of a model
wrapping it with identical outputs.

Usage:
    from tests.layer_harness import check_layer
    check_layer(lambda: MyLayer(units=4), {"x": x, "mask": m})

`inputs` is a dict of keyword arguments (tensors) to the layer's `call`; a
layer may return a tensor or a dict of tensors.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Mapping

import hisac_tf  # noqa: F401
import numpy as np
import tensorflow as tf


def _flatten(outputs):
    if isinstance(outputs, Mapping):
        return [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def check_config_round_trip(layer: tf.keras.layers.Layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config, (clone.get_config(), config)
    # Registered as serialisable: resolves through Keras' registry by name.
    restored = tf.keras.layers.deserialize(
        tf.keras.layers.serialize(layer)
    )
    assert type(restored) is type(layer)
    return clone


def check_layer(
    factory: Callable[[], tf.keras.layers.Layer],
    inputs: Mapping[str, tf.Tensor],
    train: bool = True,
    atol: float = 1e-5,
):
    """Runs the shared layer checks; returns the layer's eager outputs."""
    layer = factory()
    check_config_round_trip(layer)
    outputs = layer(**inputs)
    for t in _flatten(outputs):
        if t.dtype.is_floating:
            assert np.all(np.isfinite(t.numpy())), f"non-finite: {t}"

    if train and layer.trainable_weights:
        float_outs = [t for t in _flatten(outputs) if t.dtype.is_floating]
        assert float_outs, "trainable layer must have a float output"
        before = [w.numpy().copy() for w in layer.trainable_weights]
        opt = tf.keras.optimizers.SGD(0.1)
        with tf.GradientTape() as tape:
            outs = _flatten(layer(**inputs, training=True))
            loss = tf.add_n([
                tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
                for t in outs if t.dtype.is_floating
            ])
        grads = tape.gradient(loss, layer.trainable_weights)
        assert any(g is not None for g in grads), "no gradient reached"
        opt.apply_gradients(
            [(g, w) for g, w in zip(grads, layer.trainable_weights)
             if g is not None]
        )
        after = [w.numpy() for w in layer.trainable_weights]
        assert any(
            not np.allclose(b, a) for b, a in zip(before, after)
        ), "one training step changed no weight"

    # Save/load: a functional model around a fresh layer, SavedModel format.
    fresh = factory()
    keras_inputs = {
        name: tf.keras.Input(
            shape=t.shape[1:], dtype=t.dtype, name=name, batch_size=None
        )
        for name, t in inputs.items()
    }
    model = tf.keras.Model(keras_inputs, fresh(**keras_inputs))
    expected = _flatten(model(dict(inputs)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = tf.keras.models.load_model(path)
    got = _flatten(loaded(dict(inputs)))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(e.numpy(), g.numpy(), atol=atol)
    return outputs
