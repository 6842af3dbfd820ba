"""Sparse (top-m) soft routing and routing off the training step
(SoftRoutingAttention(top_m), `route` / `aggregate`; issue 23)."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.soft_routing_attention import SoftRoutingAttention
from hisac_tf.testing import reference_routing as ref_dense
from hisac_tf.testing import reference_routing as ref
from tests.layer_harness import check_layer


def _inputs(seed, batch=3, length=9, agents=4, ds=5, d=6):
    """Random float32 inputs with masks, incl. an empty history user."""
    rng = np.random.default_rng(seed)
    hist_mask = rng.random((batch, length)) < 0.75
    hist_mask[0, :2] = True
    hist_mask[-1] = False  # the last user has an empty history
    agent_mask = rng.random((batch, agents)) < 0.8
    agent_mask[0, 0] = True
    agent_mask[0, -1] = False
    return {
        "latents": rng.normal(size=(batch, length, ds)).astype(np.float32),
        "values": rng.normal(size=(batch, length, d)).astype(np.float32),
        "prototypes": rng.normal(size=(batch, agents, ds)).astype(
            np.float32),
        "history_mask": hist_mask,
        "agent_mask": agent_mask,
    }


def _tensors(inputs):
    return {k: tf.constant(v) for k, v in inputs.items()}


@pytest.mark.parametrize("seed,m,tau,s2", [
    (0, 1, 1.0, None), (1, 3, 0.5, None), (2, 5, 2.0, 1.0),
    (3, 8, 0.3, None),
])
def test_matches_numpy_reference(seed, m, tau, s2):
    inputs = _inputs(seed)
    out = SoftRoutingAttention(temperature=tau, latent_variance=s2,
                               top_m=m)(**_tensors(inputs))
    states, routing = ref.soft_routing(**inputs, temperature=tau,
                                       top_m=m, latent_variance=s2)
    np.testing.assert_allclose(out["routing"], routing, atol=2e-5)
    np.testing.assert_allclose(out["states"], states, atol=5e-5)
    # At most m items per agent.
    assert (np.count_nonzero(out["routing"].numpy(), -1) <= m).all()


@pytest.mark.parametrize("m", [9, 50])
def test_m_at_least_n_is_the_dense_layer(m):
    inputs = _tensors(_inputs(4))
    dense = SoftRoutingAttention(temperature=0.7)(**inputs)
    sparse = SoftRoutingAttention(temperature=0.7, top_m=m)(**inputs)
    # Static N <= m: the dense code itself.
    np.testing.assert_array_equal(sparse["states"], dense["states"])


def test_sparse_code_at_m_equal_n_equals_dense():
    """Unknown N (a serving signature): the sparse code with K = min(m, N)
    = N gives the dense weights and states to float32 rounding."""
    raw = _inputs(5)
    layer = SoftRoutingAttention(temperature=0.7, top_m=9)
    spec = {k: tf.TensorSpec([None] * v.ndim, tf.as_dtype(v.dtype))
            for k, v in raw.items()}
    fn = tf.function(lambda x: layer(**x), input_signature=[spec])
    got = fn(_tensors(raw))
    states, routing = ref_dense.soft_routing(**raw, temperature=0.7)
    np.testing.assert_allclose(got["routing"], routing, atol=2e-5)
    np.testing.assert_allclose(got["states"], states, atol=5e-5)
    dense = SoftRoutingAttention(temperature=0.7)(**_tensors(raw))
    np.testing.assert_allclose(got["states"], dense["states"], atol=1e-5)


@pytest.mark.parametrize("m", [0, 3])
def test_route_then_aggregate_equals_call(m):
    inputs = _tensors(_inputs(6))
    layer = SoftRoutingAttention(temperature=0.5, top_m=m)
    whole = layer(**inputs)
    plan = layer.route(inputs["latents"], inputs["prototypes"],
                       inputs["history_mask"], inputs["agent_mask"])
    if m:
        assert plan["weights"].shape == (3, 4, 3)
        assert plan["index"].dtype == tf.int32
    else:
        assert plan["index"] is None and plan["weights"].shape == (3, 4, 9)
    states = layer.aggregate(inputs["values"], **plan)
    np.testing.assert_allclose(states, whole["states"], atol=1e-5)


def test_gradient_of_values_only_touches_kept_items():
    inputs = _tensors(_inputs(7, batch=2, length=12, agents=2))
    layer = SoftRoutingAttention(top_m=2)
    values = tf.Variable(inputs.pop("values"))
    with tf.GradientTape() as tape:
        out = layer(values=values, **inputs)
        loss = tf.reduce_sum(out["states"][:, 0])  # agent 0
    grad = tf.convert_to_tensor(tape.gradient(loss, values))  # [2, N, D]
    touched = np.abs(grad.numpy()[0]).sum(-1) > 0  # [N] of user 0
    kept = out["routing"].numpy()[0, 0] > 0  # [N]
    np.testing.assert_array_equal(touched, kept)
    assert kept.sum() == 2
    # d sum(u) / d h_i = alpha_i for every coordinate.
    np.testing.assert_allclose(
        grad.numpy()[0, :, 0], out["routing"].numpy()[0, 0], atol=1e-6)


def test_empty_history_gives_finite_zeros():
    inputs = _inputs(8)
    inputs["history_mask"][:] = False
    out = SoftRoutingAttention(top_m=2)(**_tensors(inputs))
    assert np.isfinite(out["states"].numpy()).all()
    np.testing.assert_array_equal(out["states"], 0.0)
    np.testing.assert_array_equal(out["routing"], 0.0)


def test_no_history_items_at_all():
    """N = 0 (cold start): K = min(m, 0) = 0, zero states."""
    inputs = _tensors(_inputs(9, length=0))
    layer = SoftRoutingAttention(top_m=4)
    spec = {k: tf.TensorSpec([None] * len(v.shape), v.dtype)
            for k, v in inputs.items()}
    fn = tf.function(lambda x: layer(**x), input_signature=[spec])
    out = fn(inputs)
    np.testing.assert_array_equal(out["states"], 0.0)


def test_harness_sparse():
    inputs = _tensors(_inputs(10))
    check_layer(lambda: SoftRoutingAttention(temperature=0.5, top_m=3),
                inputs)


@pytest.mark.parametrize("kwargs,match", [
    ({"top_m": -1}, "top_m"),
    ({"top_m": 2.5}, "top_m"),
    ({"top_m": True}, "top_m"),
    ({"top_m": 3, "hard": True}, "top_m"),
    ({"top_m": 3, "chunk_size": 4}, "top_m"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftRoutingAttention(**kwargs)


def test_config_round_trip():
    layer = SoftRoutingAttention(temperature=0.5, top_m=7)
    assert layer.get_config()["top_m"] == 7
    assert SoftRoutingAttention.from_config(layer.get_config()).top_m == 7
