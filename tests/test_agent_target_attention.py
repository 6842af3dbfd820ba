"""Tests for AgentTargetAttention (docs/design.md §2.4)."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.bounded_softmax import UNDERFLOW_MARGIN
from hisac_tf.testing import reference_attention as ref_attention
from hisac_tf.testing import reference_routing as ref
from tests.layer_harness import check_layer


def _inputs(seed, batch=3, cands=5, agents=6, dq=7, dv=8):
    """Random float32 inputs; user 1 has a masked agent, the last none."""
    rng = np.random.default_rng(seed)
    agent_mask = rng.random((batch, agents)) < 0.75
    agent_mask[0, :2] = True
    agent_mask[1, 0] = False
    agent_mask[-1] = False
    weights = rng.random((batch, agents)) + 0.05
    weights /= weights.sum(-1, keepdims=True)
    return {
        "queries": rng.normal(size=(batch, cands, dq)).astype(np.float32),
        "agent_states": rng.normal(size=(batch, agents, dv)).astype(
            np.float32),
        "agent_weights": weights.astype(np.float32),
        "agent_mask": agent_mask,
    }


def _tensors(inputs):
    return {k: tf.constant(v) for k, v in inputs.items()}


def _weights(layer):
    """The layer's weights in the numpy reference's layout."""
    h, k = layer.num_heads, layer.key_dim

    def np_(v):
        return v.numpy().astype(np.float64)

    return {
        "wq": np_(layer.query_dense.kernel),  # [Dq, H, dk]
        "bq": np_(layer.query_dense.bias).reshape(h, k),
        "wk": np_(layer.key_dense.kernel),  # [Dv, H, dk]
        "bk": np_(layer.key_dense.bias).reshape(h, k),
        "wv": np_(layer.value_dense.kernel),  # [Dv, H, dk]
        "bv": np_(layer.value_dense.bias).reshape(h, k),
        "wo": np_(layer.output_dense.kernel),  # [H, dk, O]
        "bo": np_(layer.output_dense.bias),  # [O]
        **({"wm": np_(layer.mass_dense.kernel)}  # [H + 1, O]
           if layer.attention_mass else {}),
    }


def _randomise_biases(layer, seed):
    """Biases start at zero; make them non-zero so the reference checks
    them too."""
    rng = np.random.default_rng(seed)
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense,
                  layer.output_dense):
        dense.bias.assign(rng.normal(size=dense.bias.shape))


# --- golden values ---------------------------------------------------------

# H = 1, dk = 1, Dq = 1, Dv = 2, output 1; kernels chosen by hand:
# q = 1 * x_c, k_a = s_a[0] = 1 for every agent (equal keys), v_a = s_a[1],
# output = context. Logits q k_a / sqrt(1) + log w_a = x_c + log w_a; the
# x_c term is the same for every agent, so softmax_a = w_a / sum_valid w.
# w = (0.5, 0.3, 0.2), v = (10, 20, 40):
#   all valid:        attention (0.5, 0.3, 0.2), out = 5 + 6 + 8 = 19;
#   agent 2 masked:   attention (0.5, 0.3) / 0.8 = (0.625, 0.375),
#                     out = 6.25 + 7.5 = 13.75;
#   no prior:         attention (1/3, 1/3, 1/3), out = 70 / 3 = 23.333333;
#   all masked:       attention 0, out = output bias = 0.
GOLDEN = [
    pytest.param(True, [True, True, True], [0.5, 0.3, 0.2], 19.0,
                 id="prior"),
    pytest.param(True, [True, True, False], [0.625, 0.375, 0.0], 13.75,
                 id="prior_masked_agent"),
    pytest.param(False, [True, True, True], [1 / 3, 1 / 3, 1 / 3],
                 70.0 / 3.0, id="no_prior"),
    pytest.param(True, [False, False, False], [0.0, 0.0, 0.0], 0.0,
                 id="all_masked"),
]


def _hand_set_layer(use_prior, mask, attention_mass=False):
    """The golden layer described above GOLDEN, kernels set by hand.

    Returns (layer, (queries, states, weights, mask)) for `layer(*inputs)`.
    """
    layer = AgentTargetAttention(num_heads=1, key_dim=1, use_prior=use_prior,
                                 attention_mass=attention_mass)
    queries = tf.constant([[[0.7], [-2.0]]])  # [1, C=2, 1]
    states = tf.constant([[[1.0, 10.0], [1.0, 20.0], [1.0, 40.0]]])
    weights = tf.constant([[0.5, 0.3, 0.2]])
    inputs = (queries, states, weights, tf.constant([mask]))
    layer(*inputs)  # builds
    layer.query_dense.kernel.assign([[[1.0]]])
    layer.key_dense.kernel.assign([[[1.0]], [[0.0]]])
    layer.value_dense.kernel.assign([[[0.0]], [[1.0]]])
    layer.output_dense.kernel.assign([[[1.0]]])
    return layer, inputs


@pytest.mark.parametrize("use_prior,mask,attention,output", GOLDEN)
def test_golden_values(use_prior, mask, attention, output):
    layer, (queries, states, weights, mask) = _hand_set_layer(use_prior, mask)
    out = layer(queries, states, weights, mask)
    np.testing.assert_allclose(out, [[[output], [output]]], atol=1e-5)
    state = layer.encode(states, weights, mask)
    probs = layer.attention_probs(state, queries)  # [1, 1, 2, 3]
    np.testing.assert_allclose(probs[0, 0], [attention, attention],
                               atol=1e-6)


# Attention mass on the same hand-set layer: logits = x_c + log w_a (equal
# keys), so logsumexp = x_c + log(sum of the valid agents' w) (prior) or
# x_c + log(#valid) (no prior), and the prior's own logsumexp cancels the
# second term: mass = x_c whichever agents are valid. Then a layer whose
# keys differ: k_a = s_a[0] = (2, 0, 0), q = x_c = 1, no prior:
# mass = log mean(e^2, 1, 1) = log((e^2 + 2) / 3).
# W_m = [[1], [10]] adds mass + 10 * [any valid agent].
MASS_GOLDEN = [
    pytest.param(True, [True, True, True], 19.0, 0.0, id="prior"),
    pytest.param(True, [True, True, False], 13.75, 0.0,
                 id="prior_masked_agent"),
    pytest.param(False, [True, True, True], 70.0 / 3.0, 0.0,
                 id="no_prior"),
    pytest.param(False, [True, False, False], 10.0, 0.0,
                 id="no_prior_one_agent"),
    pytest.param(True, [False, False, False], None, None, id="all_masked"),
]


@pytest.mark.parametrize("use_prior,mask,context,log_mass", MASS_GOLDEN)
def test_attention_mass_golden_values(use_prior, mask, context, log_mass):
    layer, inputs = _hand_set_layer(use_prior, mask, attention_mass=True)
    layer.mass_dense.kernel.assign([[1.0], [10.0]])
    out = layer(*inputs).numpy()[0, :, 0]  # [C]
    if context is None:  # No valid agent: zero context, zero mass, flag 0.
        want = [0.0, 0.0]
    else:
        want = [context + x + log_mass + 10.0 for x in (0.7, -2.0)]
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_attention_mass_golden_unequal_keys():
    layer = AgentTargetAttention(num_heads=1, key_dim=1, use_prior=False,
                                 attention_mass=True)
    queries = tf.constant([[[1.0]]])  # [1, C=1, 1]
    states = tf.constant([[[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = tf.ones([1, 3], tf.bool)
    layer(queries, states, None, mask)  # builds
    layer.query_dense.kernel.assign([[[1.0]]])
    layer.key_dense.kernel.assign([[[1.0]], [[0.0]]])
    state = layer.encode(states, None, mask)
    logits, valid = layer.attention_logits(state, queries)
    mass = layer.mass_features(logits, valid, state["bias"])  # [1, 1, 2]
    np.testing.assert_allclose(
        mass[0, 0], [np.log((np.e**2 + 2.0) / 3.0), 1.0], atol=1e-6)


def test_attention_mass_tells_counts_apart():
    """Softmax alone cannot tell one matching agent of four from three of
    four; the mass can (log of the matching share, 1/4 vs 3/4)."""
    layer = AgentTargetAttention(num_heads=1, key_dim=2, use_prior=False,
                                 attention_mass=True)
    match = [10.0, 0.0, 1.0]
    other = [-10.0, 0.0, -1.0]
    states = tf.constant([[match, other, other, other],
                          [match, match, match, other]])  # [2, A=4, 3]
    mask = tf.ones([2, 4], tf.bool)
    queries = tf.constant([[[1.0, 0.0]], [[1.0, 0.0]]])  # [2, 1, 2]
    layer(queries, states, None, mask)  # builds
    layer.query_dense.kernel.assign([[[1.0, 0.0]], [[0.0, 1.0]]])
    layer.key_dense.kernel.assign([[[1.0, 0.0]], [[0.0, 1.0]],
                                   [[0.0, 0.0]]])
    layer.value_dense.kernel.assign([[[0.0, 0.0]], [[0.0, 0.0]],
                                     [[1.0, 0.0]]])
    state = layer.encode(states, None, mask)
    logits, valid = layer.attention_logits(state, queries)
    mass = layer.mass_features(
        logits, valid, state["bias"]).numpy()  # [2, 1, 2]
    context = tf.einsum("bhca,bhak->bchk",
                        layer.attention_probs(state, queries),
                        state["values"]).numpy()  # [B, C, H, dk]
    # The attended values agree (to the softmax's tail), the mass differs
    # by log 3.
    np.testing.assert_allclose(context[0], context[1], atol=1e-3)
    np.testing.assert_allclose(mass[1, 0, 0] - mass[0, 0, 0], np.log(3.0),
                               atol=1e-3)
    np.testing.assert_array_equal(mass[:, 0, 1], [1.0, 1.0])


def test_attention_mass_candidate_group_mask():
    """A per-candidate group mask restricts both softmax and mass; a
    candidate left with no group gets zero context and zero mass."""
    inputs = _tensors(_inputs(7, batch=2, cands=3, agents=4))
    inputs["agent_mask"] = tf.ones([2, 4], tf.bool)
    layer = AgentTargetAttention(num_heads=2, key_dim=3, attention_mass=True)
    layer(**inputs)
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    group_mask = np.ones([2, 3, 4], bool)
    group_mask[0, 1, 2:] = False  # candidate 1 of user 0: agents 0, 1
    group_mask[1, 2] = False  # candidate 2 of user 1: nothing
    out = layer.score(state, inputs["queries"], group_mask=group_mask)
    # Candidate (0, 1) equals scoring against a state of agents 0, 1 only.
    sub = {k: (v[:, :, :2] if k in ("keys", "values") else v[:, :2])
           for k, v in state.items()}
    np.testing.assert_allclose(
        out[0, 1], layer.score(sub, inputs["queries"])[0, 1], atol=1e-5)
    # Candidate (1, 2): output is the output bias only (zero context, mass).
    np.testing.assert_allclose(out[1, 2], layer.output_dense.bias, atol=0)
    probs = layer.attention_probs(state, inputs["queries"], group_mask)
    np.testing.assert_array_equal(probs[1, :, 2], 0.0)


# --- encode + score == call ------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"num_heads": 2, "key_dim": 4}, id="h2"),
        pytest.param({"num_heads": 3, "key_dim": 2, "output_dim": 5,
                      "dropout": 0.3}, id="h3_out5_dropout"),
        pytest.param({"num_heads": 1, "key_dim": 3, "use_prior": False},
                     id="no_prior"),
    ],
)
def test_encode_score_equals_call(kwargs):
    inputs = _tensors(_inputs(0))
    layer = AgentTargetAttention(**kwargs)
    via_call = layer(**inputs)
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    assert state["keys"].shape == (3, kwargs["num_heads"], 6,
                                   kwargs["key_dim"])
    assert state["values"].shape == state["keys"].shape
    assert state["bias"].shape == (3, 6)
    via_state = layer.score(state, inputs["queries"])
    np.testing.assert_array_equal(via_call.numpy(), via_state.numpy())
    # The same user state reused for another slate of candidates.
    other = tf.random.normal([3, 2, 7])
    np.testing.assert_array_equal(
        layer.score(state, other).numpy(),
        layer(other, inputs["agent_states"], inputs["agent_weights"],
              inputs["agent_mask"]).numpy())


def test_encode_and_score_as_separate_tf_functions():
    """The serving pattern: encode_user and score_with_state graphs."""
    layer = AgentTargetAttention(num_heads=2, key_dim=3)
    encode = tf.function(layer.encode, input_signature=[
        tf.TensorSpec([None, None, 8], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.bool),
    ])
    score = tf.function(
        lambda state, q: layer.score(state, q),
        input_signature=[
            {"keys": tf.TensorSpec([None, 2, None, 3], tf.float32),
             "values": tf.TensorSpec([None, 2, None, 3], tf.float32),
             "bias": tf.TensorSpec([None, None], tf.float32),
             "mask": tf.TensorSpec([None, None], tf.bool)},
            tf.TensorSpec([None, None, 7], tf.float32),
        ])
    for seed, (b, c, a) in enumerate([(3, 5, 6), (2, 9, 2)]):
        inputs = _tensors(_inputs(seed, batch=b, cands=c, agents=a))
        state = encode(inputs["agent_states"], inputs["agent_weights"],
                       inputs["agent_mask"])
        got = score(state, inputs["queries"])
        np.testing.assert_allclose(got, layer(**inputs), atol=1e-6)


# --- numpy reference -------------------------------------------------------


@pytest.mark.parametrize(
    "seed,kwargs",
    [
        pytest.param(1, {"num_heads": 2, "key_dim": 4}, id="seed1_h2"),
        pytest.param(2, {"num_heads": 4, "key_dim": 2, "output_dim": 3},
                     id="seed2_h4_out3"),
        pytest.param(3, {"num_heads": 1, "key_dim": 5, "use_prior": False},
                     id="seed3_no_prior"),
        pytest.param(4, {"num_heads": 2, "key_dim": 3,
                         "attention_mass": True}, id="seed4_mass"),
        pytest.param(5, {"num_heads": 3, "key_dim": 2, "use_prior": False,
                         "attention_mass": True}, id="seed5_mass_no_prior"),
    ],
)
def test_matches_numpy_reference(seed, kwargs):
    inputs = _inputs(seed)
    layer = AgentTargetAttention(**kwargs)
    layer(**_tensors(inputs))  # builds
    _randomise_biases(layer, seed)
    out = layer(**_tensors(inputs))
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    probs = layer.attention_probs(state, inputs["queries"])
    want_out, want_probs = ref.agent_attention(
        **inputs, weights=_weights(layer),
        use_prior=kwargs.get("use_prior", True))
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(out, want_out, atol=1e-4)


# --- prior and masks -------------------------------------------------------


def test_prior_favours_heavier_agent_with_equal_keys():
    layer = AgentTargetAttention(num_heads=2, key_dim=4)
    rng = np.random.default_rng(4)
    state_row = rng.normal(size=(1, 1, 8)).astype(np.float32)
    states = tf.constant(np.repeat(state_row, 3, axis=1))  # equal agents
    weights = tf.constant([[0.6, 0.3, 0.1]])
    mask = tf.ones([1, 3], tf.bool)
    queries = tf.constant(rng.normal(size=(1, 4, 7)).astype(np.float32))
    state = layer.encode(states, weights, mask)
    probs = layer.attention_probs(state, queries).numpy()  # [1, 2, 4, 3]
    # Equal keys: the attention is the prior itself, in every head.
    np.testing.assert_allclose(
        probs, np.broadcast_to([0.6, 0.3, 0.1], probs.shape), atol=1e-6)
    # Without the prior, equal keys give uniform attention.
    flat = AgentTargetAttention(num_heads=2, key_dim=4, use_prior=False)
    probs_flat = flat.attention_probs(
        flat.encode(states, weights, mask), queries).numpy()
    np.testing.assert_allclose(probs_flat, 1.0 / 3.0, atol=1e-6)


def test_masked_agents_get_zero_attention():
    inputs = _tensors(_inputs(5))
    layer = AgentTargetAttention(num_heads=2, key_dim=4)
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    probs = layer.attention_probs(state, inputs["queries"]).numpy()
    mask = inputs["agent_mask"].numpy()  # [B, A]
    masked = np.broadcast_to(~mask[:, None, None, :], probs.shape)
    assert np.all(probs[masked] == 0.0)
    sums = probs.sum(-1)  # [B, H, C]
    np.testing.assert_allclose(sums[:-1], 1.0, atol=1e-6)
    np.testing.assert_array_equal(sums[-1], 0.0)  # the all-masked user
    # Changing a masked agent's state or weight changes nothing.
    states = inputs["agent_states"].numpy().copy()
    weights = inputs["agent_weights"].numpy().copy()
    states[~mask] = 1e4
    weights[~mask] = 0.0
    np.testing.assert_allclose(
        layer(inputs["queries"], states, weights, inputs["agent_mask"]),
        layer(**inputs), atol=1e-6)


def test_all_masked_user_is_finite_output_bias():
    inputs = _tensors(_inputs(6))
    layer = AgentTargetAttention(num_heads=2, key_dim=4, output_dim=3)
    layer(**inputs)
    _randomise_biases(layer, 6)
    out = layer(**inputs).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(
        out[-1], np.broadcast_to(layer.output_dense.bias.numpy(), (5, 3)),
        atol=1e-6)


def test_zero_weight_valid_agent_is_finite():
    inputs = _tensors(_inputs(7))
    weights = inputs["agent_weights"].numpy()
    weights[0, 0] = 0.0
    out = AgentTargetAttention(num_heads=2, key_dim=4)(
        inputs["queries"], inputs["agent_states"], weights,
        inputs["agent_mask"])
    assert np.all(np.isfinite(out.numpy()))


# --- dropout ---------------------------------------------------------------


def test_dropout_only_in_training():
    inputs = _tensors(_inputs(8))
    layer = AgentTargetAttention(num_heads=2, key_dim=4, dropout=0.5)
    infer_a = layer(**inputs, training=False)
    infer_b = layer(**inputs)
    np.testing.assert_array_equal(infer_a.numpy(), infer_b.numpy())
    train = layer(**inputs, training=True)
    assert not np.allclose(train.numpy(), infer_a.numpy())


# --- mixed precision -------------------------------------------------------


def _set_seeded_weights(layer, seed):
    """Keras' unseeded initialisers differ run to run: fix the weights."""
    rng = np.random.default_rng(seed)
    layer.set_weights([
        rng.normal(scale=0.3, size=w.shape).astype(np.float32)
        for w in layer.get_weights()
    ])


def test_mixed_float16_close_to_float32():
    inputs = _tensors(_inputs(9))
    want_layer = AgentTargetAttention(num_heads=2, key_dim=8, output_dim=4)
    want_layer(**inputs)
    _set_seeded_weights(want_layer, 9)
    want = want_layer(**inputs).numpy()
    layer = AgentTargetAttention(num_heads=2, key_dim=8, output_dim=4,
                                 dtype="mixed_float16")
    layer(**inputs)
    layer.set_weights(want_layer.get_weights())
    got = layer(**inputs)
    assert got.dtype == tf.float16
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    assert state["keys"].dtype == tf.float16
    assert state["bias"].dtype == tf.float32
    got = tf.cast(got, tf.float32).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=2e-2 * np.abs(want).max())


def test_global_mixed_float16_policy():
    inputs = _tensors(_inputs(11))
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = AgentTargetAttention(num_heads=2, key_dim=4)
        out = layer(**inputs)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.float16
    assert layer.key_dense.compute_dtype == "float16"
    assert layer.output_dense.kernel.dtype == tf.float32  # float32 weights
    assert np.all(np.isfinite(out.numpy()))


def test_mixed_float16_huge_logits_finite():
    # Inputs of magnitude ~100 and weights ~1: q.k ~ 8 * (100 * 8)^2
    # ~ 5e6 overflows float16 (max 65504); logits are float32.
    inputs = _inputs(10)
    inputs["agent_states"] *= 100.0
    inputs["queries"] *= 100.0
    layer = AgentTargetAttention(num_heads=2, key_dim=8, output_dim=4,
                                 dtype="mixed_float16")
    layer(**_tensors(inputs))
    rng = np.random.default_rng(10)
    layer.set_weights([np.sign(rng.normal(size=w.shape)).astype(np.float32)
                       * 0.05 for w in layer.get_weights()])
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    probs = layer.attention_probs(state, inputs["queries"]).numpy()
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1)[:-1], 1.0, atol=1e-3)
    assert np.all(np.isfinite(layer(**_tensors(inputs)).numpy()))


# --- shared harness --------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"num_heads": 2, "key_dim": 4}, id="default_out"),
        pytest.param({"num_heads": 3, "key_dim": 2, "output_dim": 5,
                      "dropout": 0.1, "use_prior": False},
                     id="out5_dropout_no_prior"),
        pytest.param({"num_heads": 2, "key_dim": 4, "attention_mass": True},
                     id="attention_mass"),
    ],
)
def test_harness(kwargs):
    out = check_layer(lambda: AgentTargetAttention(**kwargs),
                      _tensors(_inputs(10)))
    assert out.shape == (3, 5, kwargs.get("output_dim", 7))


def test_config_round_trip_values():
    layer = AgentTargetAttention(num_heads=3, key_dim=2, output_dim=5,
                                 dropout=0.1, use_prior=False,
                                 attention_mass=True, name="ata")
    config = layer.get_config()
    clone = AgentTargetAttention.from_config(config)
    for key in ("num_heads", "key_dim", "output_dim", "dropout",
                "use_prior", "attention_mass", "name"):
        assert getattr(clone, key) == config[key] == getattr(layer, key)


# --- argument errors -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param({"num_heads": 0, "key_dim": 4}, "num_heads.*0",
                     id="heads_zero"),
        pytest.param({"num_heads": 2.0, "key_dim": 4}, "num_heads.*2.0",
                     id="heads_float"),
        pytest.param({"num_heads": 2, "key_dim": 0}, "key_dim.*0",
                     id="key_dim_zero"),
        pytest.param({"num_heads": 2, "key_dim": 4, "output_dim": -1},
                     "output_dim.*-1", id="output_dim_negative"),
        pytest.param({"num_heads": 2, "key_dim": 4, "dropout": 1.0},
                     r"dropout.*1\.0", id="dropout_one"),
        pytest.param({"num_heads": 2, "key_dim": 4, "use_prior": "yes"},
                     "use_prior.*'yes'", id="use_prior_str"),
        pytest.param({"num_heads": 2, "key_dim": 4, "attention_mass": 1},
                     "attention_mass.*1", id="attention_mass_int"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AgentTargetAttention(**kwargs)


@pytest.mark.parametrize(
    "name,shape,match",
    [
        pytest.param("agent_weights", [3, 5],
                     r"`agent_weights` has A = 5.*\[3, 5\]", id="weights_A"),
        pytest.param("agent_mask", [2, 6], r"`agent_mask` has B = 2.*\[2, 6\]",
                     id="mask_B"),
        pytest.param("queries", [3, 7],
                     r"`queries` must have shape.*\[3, 7\]",
                     id="queries_rank"),
        pytest.param("queries", [2, 5, 7], r"`queries` has B = 2.*\[2, 5, 7\]",
                     id="queries_B"),
        pytest.param("agent_states", [3, 6],
                     r"`agent_states` must have shape.*\[3, 6\]",
                     id="states_rank"),
    ],
)
def test_call_shape_errors(name, shape, match):
    inputs = _tensors(_inputs(11))
    inputs[name] = tf.zeros(shape, inputs[name].dtype)
    with pytest.raises(ValueError, match=match):
        AgentTargetAttention(num_heads=2, key_dim=4)(**inputs)


def test_prior_needs_weights():
    inputs = _tensors(_inputs(12))
    layer = AgentTargetAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="agent_weights.*None"):
        layer.encode(inputs["agent_states"], None, inputs["agent_mask"])
    # Without the prior the weights may be left out.
    flat = AgentTargetAttention(num_heads=2, key_dim=4, use_prior=False)
    state = flat.encode(inputs["agent_states"], None, inputs["agent_mask"])
    np.testing.assert_allclose(
        flat.score(state, inputs["queries"]), flat(**inputs), atol=1e-6)


def test_score_rejects_incomplete_state():
    inputs = _tensors(_inputs(13))
    layer = AgentTargetAttention(num_heads=2, key_dim=4)
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    del state["mask"]
    with pytest.raises(ValueError, match=r"state.*lacks \['mask'\]"):
        layer.score(state, inputs["queries"])


# --- lean score == the previous plain code (tests/reference_attention.py) --

# Methods' shapes: hisac (A agents, voting prior), full history (G = N
# items, no prior), sim_hard (per-candidate group mask). Each has a user
# with a partial mask and one with an empty history.
LEAN_CASES = [
    pytest.param(dict(agents=12, use_prior=True, group=False), id="hisac"),
    pytest.param(dict(agents=300, use_prior=False, group=False),
                 id="full_history"),
    pytest.param(dict(agents=40, use_prior=False, group=True),
                 id="sim_hard_group_mask"),
]


def _lean_setup(case, mass, seed, scale=1.0, **layer_kw):
    inputs = _inputs(seed, batch=3, cands=6, agents=case["agents"])
    inputs["agent_states"] *= scale
    layer = AgentTargetAttention(num_heads=2, key_dim=4, output_dim=5,
                                 use_prior=case["use_prior"],
                                 attention_mass=mass, **layer_kw)
    layer(**_tensors(inputs))
    _set_seeded_weights(layer, seed)
    state = layer.encode(inputs["agent_states"], inputs["agent_weights"],
                         inputs["agent_mask"])
    group = None
    if case["group"]:
        rng = np.random.default_rng(seed + 1)
        group = rng.random((3, 6, case["agents"])) < 0.5
        group[0, 2] = False  # a candidate left without any group
    return layer, state, inputs["queries"], group


def _bound_gap(layer, state, queries, group):
    """[B - 1, C, H] bound - exact row maximum (the empty user left out)."""
    q, k, _, bias, mask = layer._operands(state, queries, group)
    bound = layer._logit_bound(q, k, bias, mask)  # [B, C, H]
    top = tf.reduce_max(layer._shifted_logits(
        q, k, bias, tf.zeros_like(bound)), -1)  # [B, H, C]
    gap = (bound - tf.transpose(top, [0, 2, 1])).numpy()[:-1]
    assert np.all(gap >= -1e-4)  # an upper bound
    return gap[gap < 1e30]  # a candidate without group: min - min


@pytest.mark.parametrize("mass", [False, True], ids=["no_mass", "mass"])
@pytest.mark.parametrize("case", LEAN_CASES)
def test_lean_score_equals_reference(case, mass):
    """Lean score == the plain masked-softmax code, float32, rtol 1e-5,
    including the user whose history is empty (finite: the bias)."""
    layer, state, queries, group = _lean_setup(case, mass, 21)
    assert _bound_gap(layer, state, queries, group).max() < UNDERFLOW_MARGIN
    got = layer.score(state, queries, group_mask=group).numpy()
    want = ref_attention.attention_score(layer, state, queries,
                                         group).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The empty user (the last) gets the output projection's bias only.
    np.testing.assert_allclose(got[-1], np.broadcast_to(
        layer.output_dense.bias.numpy(), got[-1].shape), atol=1e-6)


@pytest.mark.parametrize("case", LEAN_CASES)
def test_lean_score_exact_fallback_when_bound_is_loose(case):
    """Keys ~100x larger: the Cauchy-Schwarz bound is loose by far more
    than the underflow margin, the exact-max branch of the tf.cond takes
    over, in eager and in a tf.function alike."""
    layer, state, queries, group = _lean_setup(case, True, 22, scale=100.0)
    gap = _bound_gap(layer, state, queries, group)
    assert gap.max() > 2 * UNDERFLOW_MARGIN  # the fast path would fail
    want = ref_attention.attention_score(layer, state, queries,
                                         group).numpy()
    eager = layer.score(state, queries, group_mask=group).numpy()
    graph = tf.function(
        lambda s, x: layer.score(s, x, group_mask=group))(state, queries)
    for got in (eager, graph.numpy()):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-4,
                                   atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_matmuls_close_to_float32(dtype):
    """matmul_dtype 16-bit: the two matmuls in 16 bits, softmax float32;
    within 3% of the output's range of the float32 layer."""
    case = dict(agents=300, use_prior=True, group=False)
    layer, state, queries, _ = _lean_setup(case, True, 23)
    want = layer.score(state, queries).numpy()
    low = AgentTargetAttention.from_config(
        {**layer.get_config(), "matmul_dtype": dtype})
    low(queries, tf.zeros([3, 300, 8]), tf.ones([3, 300]),
        tf.ones([3, 300], tf.bool))
    low.set_weights(layer.get_weights())
    got = low.score(state, queries).numpy()
    assert low.get_config()["matmul_dtype"] == dtype
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=3e-2 * np.abs(want).max())


def test_matmul_dtype_rejects_unknown():
    with pytest.raises(ValueError, match="matmul_dtype.*'int8'"):
        AgentTargetAttention(num_heads=1, key_dim=1, matmul_dtype="int8")


@pytest.mark.parametrize("case", LEAN_CASES)
def test_lean_gradients_finite_and_equal_reference(case):
    """A user with one valid agent (key == mean key: a zero norm in the
    logit bound) and zero queries with zero query bias (|q| = 0): the
    gradients stay finite (the shift carries none) and match the plain
    code's. Before the stop_gradient they were NaN and training diverged."""
    layer, state, queries, group = _lean_setup(case, True, 24)
    layer.query_dense.bias.assign(tf.zeros_like(layer.query_dense.bias))
    inputs = _inputs(24, batch=3, cands=6, agents=case["agents"])
    inputs["agent_mask"][1] = False
    inputs["agent_mask"][1, 3] = True  # user 1: a single valid agent
    inputs["queries"][0, :2] = 0.0  # two zero queries

    def grads(score):
        with tf.GradientTape() as tape:
            state = layer.encode(inputs["agent_states"],
                                 inputs["agent_weights"],
                                 inputs["agent_mask"])
            loss = tf.reduce_sum(tf.square(score(state)))
        return tape.gradient(loss, layer.trainable_weights)

    got = grads(lambda s: layer.score(s, inputs["queries"],
                                      group_mask=group))
    want = grads(lambda s: ref_attention.attention_score(
        layer, s, inputs["queries"], group))
    for g, w in zip(got, want):
        assert np.all(np.isfinite(g.numpy()))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
