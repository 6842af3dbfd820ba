"""Tests for SoftRoutingAttention (docs/design.md §2.3)."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.soft_routing_attention import SoftRoutingAttention
from hisac_tf.testing import reference_attention as ref_plain
from hisac_tf.testing import reference_routing as ref
from tests.layer_harness import check_layer


def _inputs(seed, batch=3, length=7, agents=4, ds=5, d=6, scale=1.0):
    """Random float32 inputs with masks, incl. an empty history user."""
    rng = np.random.default_rng(seed)
    hist_mask = rng.random((batch, length)) < 0.7
    hist_mask[0, 0] = True  # user 0 has at least one valid item
    hist_mask[-1] = False  # the last user has an empty history
    agent_mask = rng.random((batch, agents)) < 0.8
    agent_mask[0, 0] = True
    agent_mask[0, -1] = False  # a masked agent of a user with history
    return {
        "latents": (scale * rng.normal(size=(batch, length, ds))).astype(
            np.float32),
        "values": rng.normal(size=(batch, length, d)).astype(np.float32),
        "prototypes": (scale * rng.normal(size=(batch, agents, ds))).astype(
            np.float32),
        "history_mask": hist_mask,
        "agent_mask": agent_mask,
    }


def _tensors(inputs):
    return {k: tf.constant(v) for k, v in inputs.items()}


# --- golden values ---------------------------------------------------------

# 1-D latents z = (0, 1, 3), agent prototypes p = (0, 2), tau = 1, values
# h = ((1, 0), (0, 1), (2, 2)); absolute distances (latent_variance = 1).
# Agent 0 (p = 0): squared distances (0, 1, 9), logits (0, -1, -9),
#   exp = (1, e^-1, e^-9) = (1, 0.3678794, 0.0001234), sum = 1.3680029,
#   alpha = (0.7309926, 0.2689172, 0.0000902),
#   u = alpha_0 (1, 0) + alpha_1 (0, 1) + alpha_2 (2, 2)
#     = (0.7309926 + 2 * 0.0000902, 0.2689172 + 2 * 0.0000902)
#     = (0.7311731, 0.2690976).
# Agent 1 (p = 2): squared distances (4, 1, 1), logits (-4, -1, -1),
#   exp = (e^-4, e^-1, e^-1) = (0.0183156, 0.3678794, 0.3678794),
#   sum = 0.7540745, alpha = (0.0242889, 0.4878556, 0.4878556),
#   u = (e^-4 + 2 e^-1, 3 e^-1) / sum = (1.0, 1.4635667).
# With item 2 masked: agent 0 alpha = (1, e^-1) / (1 + e^-1)
#   = (0.7310586, 0.2689414), u = (0.7310586, 0.2689414);
#   agent 1 alpha = (e^-4, e^-1) / (e^-4 + e^-1) = (0.0474259, 0.9525741),
#   u = (0.0474259, 0.9525741).
GOLDEN = [
    pytest.param(
        [True, True, True],
        [[0.7309926, 0.2689172, 0.0000902], [0.0242889, 0.4878556, 0.4878556]],
        [[0.7311731, 0.2690976], [1.0, 1.4635667]],
        id="all_valid",
    ),
    pytest.param(
        [True, True, False],
        [[0.7310586, 0.2689414, 0.0], [0.0474259, 0.9525741, 0.0]],
        [[0.7310586, 0.2689414], [0.0474259, 0.9525741]],
        id="item_masked",
    ),
]


@pytest.mark.parametrize("hist_mask,routing,states", GOLDEN)
def test_golden_values(hist_mask, routing, states):
    out = SoftRoutingAttention(temperature=1.0, latent_variance=1.0)(
        latents=tf.constant([[[0.0], [1.0], [3.0]]]),
        values=tf.constant([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]]),
        prototypes=tf.constant([[[0.0], [2.0]]]),
        history_mask=tf.constant([hist_mask]),
        agent_mask=tf.constant([[True, True]]),
    )
    np.testing.assert_allclose(out["routing"][0], routing, atol=1e-6)
    np.testing.assert_allclose(out["states"][0], states, atol=1e-6)


# Relative temperature (latent_variance None): the same data, s^2 = mean of
# ||z_i||^2 / Ds over the valid items (Ds = 1 here).
# All valid: s^2 = (0 + 1 + 9) / 3 = 10/3, tau s^2 = 10/3.
#   Agent 0: logits -(0, 1, 9) * 0.3 = (0, -0.3, -2.7), exp = (1,
#   0.7408182, 0.0672055), sum 1.8080237, alpha = (0.5530901, 0.4097392,
#   0.0371707), u = (0.5530901 + 2 * 0.0371707, 0.4097392 + 2 * 0.0371707)
#   = (0.6274315, 0.4840806).
#   Agent 1: logits -(4, 1, 1) * 0.3 = (-1.2, -0.3, -0.3), alpha =
#   (0.1689416, 0.4155292, 0.4155292), u = (0.1689416 + 0.8310584,
#   0.4155292 + 0.8310584) = (1.0, 1.2465876).
# Item 2 masked: s^2 = (0 + 1) / 2 = 0.5, so tau s^2 = 0.5:
#   agent 0 logits (0, -2): alpha = (0.8807971, 0.1192029);
#   agent 1 logits (-8, -2): alpha = (0.0024726, 0.9975274).
RELATIVE_GOLDEN = [
    pytest.param(
        [True, True, True],
        [[0.5530901, 0.4097392, 0.0371707], [0.1689416, 0.4155292, 0.4155292]],
        [[0.6274315, 0.4840806], [1.0, 1.2465876]],
        id="all_valid",
    ),
    pytest.param(
        [True, True, False],
        [[0.8807971, 0.1192029, 0.0], [0.0024726, 0.9975274, 0.0]],
        [[0.8807971, 0.1192029], [0.0024726, 0.9975274]],
        id="item_masked",
    ),
]


@pytest.mark.parametrize("hist_mask,routing,states", RELATIVE_GOLDEN)
def test_golden_values_relative_temperature(hist_mask, routing, states):
    out = SoftRoutingAttention(temperature=1.0)(
        latents=tf.constant([[[0.0], [1.0], [3.0]]]),
        values=tf.constant([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]]),
        prototypes=tf.constant([[[0.0], [2.0]]]),
        history_mask=tf.constant([hist_mask]),
        agent_mask=tf.constant([[True, True]]),
    )
    np.testing.assert_allclose(out["routing"][0], routing, atol=1e-6)
    np.testing.assert_allclose(out["states"][0], states, atol=1e-6)


@pytest.mark.parametrize("factor", [pytest.param(f, id=f"x{f}")
                                    for f in (0.01, 1.0, 50.0)])
def test_relative_routing_ignores_the_latent_scale(factor):
    # Scaling z and p together leaves the relative routing unchanged.
    inputs = _inputs(20)
    want = SoftRoutingAttention(temperature=0.3)(**_tensors(inputs))
    scaled = dict(inputs, latents=inputs["latents"] * factor,
                  prototypes=inputs["prototypes"] * factor)
    got = SoftRoutingAttention(temperature=0.3)(**_tensors(scaled))
    np.testing.assert_allclose(got["routing"], want["routing"], atol=1e-5)


def test_unit_rms_latents_keep_the_absolute_temperature():
    # Every ||z_i||^2 = Ds: s^2 = 1, the relative and absolute routings
    # agree (tau keeps its meaning on normalised latents).
    inputs = _inputs(21)
    z = inputs["latents"]
    inputs["latents"] = z / np.sqrt((z ** 2).mean(-1, keepdims=True))
    rel = SoftRoutingAttention(temperature=0.4)(**_tensors(inputs))
    ab = SoftRoutingAttention(temperature=0.4, latent_variance=1.0)(
        **_tensors(inputs))
    np.testing.assert_allclose(rel["routing"], ab["routing"], atol=1e-5)


def test_temperature_sharpens():
    # Same data, tau = 0.5: agent 0 logits (0, -2, -18) ->
    # alpha_0 = 1 / (1 + e^-2 + e^-18) = 0.8807971 (sharper than 0.7309926).
    out = SoftRoutingAttention(temperature=0.5, latent_variance=1.0)(
        latents=tf.constant([[[0.0], [1.0], [3.0]]]),
        values=tf.constant([[[1.0], [0.0], [0.0]]]),
        prototypes=tf.constant([[[0.0]]]),
        history_mask=tf.constant([[True, True, True]]),
        agent_mask=tf.constant([[True]]),
    )
    np.testing.assert_allclose(out["routing"][0, 0, 0], 0.8807971, atol=1e-6)


# --- numpy reference -------------------------------------------------------


@pytest.mark.parametrize(
    "seed,tau,scale,s2",
    [
        pytest.param(0, 1.0, 1.0, None, id="seed0_tau1"),
        pytest.param(1, 0.3, 1.0, None, id="seed1_tau0.3"),
        pytest.param(2, 5.0, 3.0, None, id="seed2_tau5_wide"),
        pytest.param(3, 0.05, 0.5, None, id="seed3_tau0.05"),
        pytest.param(4, 1.0, 1.0, 1.0, id="seed4_tau1_absolute"),
        pytest.param(5, 0.5, 2.0, 7.5, id="seed5_tau0.5_fixed_s2"),
    ],
)
def test_matches_numpy_reference(seed, tau, scale, s2):
    inputs = _inputs(seed, scale=scale)
    out = SoftRoutingAttention(temperature=tau, latent_variance=s2)(
        **_tensors(inputs))
    states, routing = ref.soft_routing(**inputs, temperature=tau,
                                       latent_variance=s2)
    np.testing.assert_allclose(out["routing"], routing, atol=2e-5)
    np.testing.assert_allclose(out["states"], states, atol=5e-5)
    # Routing rows: sum to 1 for a valid agent of a non-empty history,
    # 0 otherwise.
    valid_row = inputs["agent_mask"] & inputs["history_mask"].any(-1)[:, None]
    np.testing.assert_allclose(
        out["routing"].numpy().sum(-1), valid_row.astype(np.float32),
        atol=1e-5,
    )


def test_tf_function_unknown_shapes_matches_eager():
    layer = SoftRoutingAttention(temperature=0.7)
    spec = {
        "latents": tf.TensorSpec([None, None, 5], tf.float32),
        "values": tf.TensorSpec([None, None, 6], tf.float32),
        "prototypes": tf.TensorSpec([None, None, 5], tf.float32),
        "history_mask": tf.TensorSpec([None, None], tf.bool),
        "agent_mask": tf.TensorSpec([None, None], tf.bool),
    }
    fn = tf.function(lambda x: layer(**x), input_signature=[spec])
    for seed, (b, n, a) in enumerate([(3, 7, 4), (1, 11, 2)]):
        inputs = _tensors(_inputs(seed, batch=b, length=n, agents=a))
        got = fn(inputs)
        want = layer(**inputs)
        np.testing.assert_allclose(got["states"], want["states"], atol=1e-6)
        np.testing.assert_allclose(got["routing"], want["routing"], atol=1e-6)


def test_no_rank4_tensor_in_soft_graph():
    """Distances via matmul: no [B, A, N, Ds] intermediate is built."""
    layer = SoftRoutingAttention()
    spec = {
        "latents": tf.TensorSpec([None, None, 5], tf.float32),
        "values": tf.TensorSpec([None, None, 6], tf.float32),
        "prototypes": tf.TensorSpec([None, None, 5], tf.float32),
        "history_mask": tf.TensorSpec([None, None], tf.bool),
        "agent_mask": tf.TensorSpec([None, None], tf.bool),
    }
    graph = tf.function(lambda x: layer(**x)).get_concrete_function(
        spec).graph
    ranks = [
        t.shape.rank for op in graph.get_operations() for t in op.outputs
    ]
    assert ranks and max(r for r in ranks if r is not None) == 3


# --- hard routing ----------------------------------------------------------


def _sid_inputs(seed, batch=3, length=9, agents=4, levels=2, codes=3):
    """Items whose latents equal their SID's prototype (integer vectors)."""
    rng = np.random.default_rng(seed)
    # Integer codeword tables E^l[c] = 3 (c + 1) e_l: every full SID maps to
    # a distinct integer vector p(SID) = sum_l E^l[c_l] (exact in float32),
    # two distinct SIDs at squared distance >= 9.
    tables = [3 * np.outer(np.arange(1, codes + 1), np.eye(levels)[lvl])
              for lvl in range(levels)]

    def proto(sid):
        return sum(tables[lvl][c] for lvl, c in enumerate(sid))

    item_sids = rng.integers(0, codes, size=(batch, length, levels))
    hist_mask = rng.random((batch, length)) < 0.8
    hist_mask[-1] = False  # an empty history
    agent_sids = np.zeros((batch, agents, levels), np.int64)
    agent_mask = np.zeros((batch, agents), bool)
    for b in range(batch):
        # Agents: the distinct SIDs of the user's valid items (as voting
        # would keep them), padded.
        seen = sorted({tuple(s) for s in item_sids[b][hist_mask[b]]})
        for a, sid in enumerate(seen[:agents]):
            agent_sids[b, a] = sid
            agent_mask[b, a] = True
    # Keep only items whose SID is one of the kept agents.
    for b in range(batch):
        kept = {tuple(s) for s in agent_sids[b][agent_mask[b]]}
        for i in range(length):
            if tuple(item_sids[b, i]) not in kept:
                hist_mask[b, i] = False
    latents = np.array(
        [[proto(s) for s in user] for user in item_sids], np.float32)
    prototypes = np.array(
        [[proto(s) for s in user] for user in agent_sids], np.float32)
    values = rng.normal(size=(batch, length, 3)).astype(np.float32)
    return {
        "latents": latents,
        "values": values,
        "prototypes": prototypes,
        "history_mask": hist_mask,
        "agent_mask": agent_mask,
        "item_sids": item_sids.astype(np.int32),
        "agent_sids": agent_sids.astype(np.int32),
    }


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}")
                                  for s in range(3)])
def test_soft_with_tiny_tau_equals_hard(seed):
    inputs = _sid_inputs(seed)
    tensors = _tensors(inputs)
    hard = SoftRoutingAttention(hard=True)(**tensors)
    soft_inputs = {k: v for k, v in tensors.items() if "sids" not in k}
    soft = SoftRoutingAttention(temperature=1e-4)(**soft_inputs)
    states, routing = ref.hard_routing(
        inputs["values"], inputs["item_sids"], inputs["agent_sids"],
        inputs["history_mask"], inputs["agent_mask"])
    assert routing.sum() > 0
    np.testing.assert_allclose(hard["routing"], routing, atol=1e-6)
    np.testing.assert_allclose(hard["states"], states, atol=1e-5)
    np.testing.assert_allclose(soft["routing"], hard["routing"], atol=1e-6)
    np.testing.assert_allclose(soft["states"], hard["states"], atol=1e-5)


def test_hard_agent_without_items_is_zero():
    # Item SIDs (0, 1), (0, 1), (1, 0); agents (0, 1), (1, 1) (no item).
    # Values 2, 4, 8: agent 0 averages items 0 and 1 -> 3; agent 1 -> 0.
    out = SoftRoutingAttention(hard=True)(
        latents=tf.zeros([1, 3, 2]),
        values=tf.constant([[[2.0], [4.0], [8.0]]]),
        prototypes=tf.zeros([1, 2, 2]),
        history_mask=tf.constant([[True, True, True]]),
        agent_mask=tf.constant([[True, True]]),
        item_sids=tf.constant([[[0, 1], [0, 1], [1, 0]]]),
        agent_sids=tf.constant([[[0, 1], [1, 1]]]),
    )
    np.testing.assert_allclose(out["routing"][0],
                               [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(out["states"][0], [[3.0], [0.0]])


# --- degenerate masks ------------------------------------------------------


@pytest.mark.parametrize("hard", [pytest.param(False, id="soft"),
                                  pytest.param(True, id="hard")])
@pytest.mark.parametrize(
    "which",
    [pytest.param("empty_history", id="empty_history"),
     pytest.param("no_agents", id="all_agents_masked")],
)
def test_degenerate_masks_give_finite_zeros(hard, which):
    inputs = _tensors(_inputs(5))
    if which == "empty_history":
        inputs["history_mask"] = tf.zeros_like(inputs["history_mask"])
    else:
        inputs["agent_mask"] = tf.zeros_like(inputs["agent_mask"])
    if hard:
        inputs["item_sids"] = tf.zeros([3, 7, 2], tf.int32)
        inputs["agent_sids"] = tf.zeros([3, 4, 2], tf.int32)
    out = SoftRoutingAttention(hard=hard)(**inputs)
    for key in ("states", "routing"):
        assert np.all(np.isfinite(out[key].numpy()))
        assert not np.any(out[key].numpy())


# --- mixed precision -------------------------------------------------------


def test_mixed_float16_policy_finite_and_close():
    inputs = _tensors(_inputs(7, scale=20.0))  # ||z - p||^2 ~ 4000
    want = SoftRoutingAttention(temperature=400.0, latent_variance=1.0)(
        **inputs)
    got = SoftRoutingAttention(temperature=400.0, latent_variance=1.0,
                               dtype="mixed_float16")(**inputs)
    assert got["states"].dtype == tf.float16
    assert got["routing"].dtype == tf.float16
    for key in ("states", "routing"):
        assert np.all(np.isfinite(got[key].numpy()))
        np.testing.assert_allclose(
            tf.cast(got[key], tf.float32), want[key], atol=1e-2, rtol=1e-2)


def test_global_mixed_float16_policy():
    inputs = _tensors(_inputs(6))
    want = SoftRoutingAttention()(**inputs)
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        got = SoftRoutingAttention()(**inputs)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert got["states"].dtype == tf.float16
    np.testing.assert_allclose(
        tf.cast(got["states"], tf.float32), want["states"], atol=1e-2)


def test_float16_inputs_with_large_latents_finite():
    # ||z||^2 ~ 8 * 300^2 = 720000 overflows float16 (max 65504); the layer
    # computes distances in float32.
    inputs = _inputs(8, ds=8, scale=300.0)
    layer = SoftRoutingAttention(temperature=1e5, latent_variance=1.0)
    want = layer(**_tensors(inputs))
    f16 = {k: (v.astype(np.float16) if v.dtype == np.float32 else v)
           for k, v in inputs.items()}
    got = SoftRoutingAttention(temperature=1e5, latent_variance=1.0)(
        **_tensors(f16))
    assert got["states"].dtype == tf.float32  # compute dtype of the policy
    assert np.all(np.isfinite(got["states"].numpy()))
    np.testing.assert_allclose(got["states"], want["states"], atol=2e-2)
    np.testing.assert_allclose(got["routing"], want["routing"], atol=2e-2)


# --- gradients -------------------------------------------------------------


def test_gradient_reaches_values_only():
    inputs = _tensors(_inputs(9))
    layer = SoftRoutingAttention(temperature=0.5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([inputs["latents"], inputs["values"],
                    inputs["prototypes"]])
        out = layer(**inputs)
        loss = tf.reduce_sum(tf.square(out["states"])) + tf.reduce_sum(
            out["routing"] * tf.range(7, dtype=tf.float32))
    g_values = tape.gradient(loss, inputs["values"])
    assert g_values is not None
    assert np.all(np.isfinite(g_values.numpy()))
    assert np.any(g_values.numpy() != 0)
    # Padding items and the empty-history user get no gradient.
    mask = inputs["history_mask"].numpy()
    assert not np.any(g_values.numpy()[~mask])
    for name in ("latents", "prototypes"):
        g = tape.gradient(loss, inputs[name])
        assert g is None or not np.any(g.numpy()), name


# --- shared harness --------------------------------------------------------


def test_harness_soft():
    check_layer(lambda: SoftRoutingAttention(temperature=0.5),
                _tensors(_inputs(10)), train=False)


def test_harness_hard():
    inputs = _tensors(_sid_inputs(11))
    check_layer(lambda: SoftRoutingAttention(hard=True), inputs, train=False)


def test_config_round_trip_values():
    layer = SoftRoutingAttention(temperature=0.25, hard=True,
                                 latent_variance=16.0, name="srt")
    clone = SoftRoutingAttention.from_config(layer.get_config())
    assert (clone.temperature, clone.hard, clone.latent_variance,
            clone.name) == (0.25, True, 16.0, "srt")


# --- argument errors -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param({"temperature": 0.0}, "temperature.*0.0", id="tau_zero"),
        pytest.param({"temperature": -1.0}, "temperature.*-1.0",
                     id="tau_negative"),
        pytest.param({"temperature": float("nan")}, "temperature.*nan",
                     id="tau_nan"),
        pytest.param({"temperature": "1"}, "temperature.*'1'", id="tau_str"),
        pytest.param({"hard": 1}, "hard.*1", id="hard_not_bool"),
        pytest.param({"latent_variance": 0.0}, "latent_variance.*0.0",
                     id="s2_zero"),
        pytest.param({"latent_variance": -2.0}, "latent_variance.*-2.0",
                     id="s2_negative"),
        pytest.param({"latent_variance": float("inf")}, "latent_variance.*inf",
                     id="s2_inf"),
        pytest.param({"latent_variance": "16"}, "latent_variance.*'16'",
                     id="s2_str"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftRoutingAttention(**kwargs)


@pytest.mark.parametrize(
    "name,shape,match",
    [
        pytest.param("values", [3, 6, 6], r"`values` has N = 6.*\[3, 6, 6\]",
                     id="values_N"),
        pytest.param("prototypes", [3, 4, 4],
                     r"`prototypes` has Ds = 4.*\[3, 4, 4\]",
                     id="prototypes_Ds"),
        pytest.param("agent_mask", [3, 5], r"`agent_mask` has A = 5.*\[3, 5\]",
                     id="agent_mask_A"),
        pytest.param("history_mask", [2, 7],
                     r"`history_mask` has B = 2.*\[2, 7\]",
                     id="history_mask_B"),
        pytest.param("latents", [3, 7], r"`latents` must have shape.*\[3, 7\]",
                     id="latents_rank"),
    ],
)
def test_call_shape_errors(name, shape, match):
    inputs = _tensors(_inputs(12))
    dtype = inputs[name].dtype
    inputs[name] = tf.zeros(shape, dtype)
    with pytest.raises(ValueError, match=match):
        SoftRoutingAttention()(**inputs)


def test_hard_needs_sids():
    with pytest.raises(ValueError, match="item_sids.*received item_sids=None"):
        SoftRoutingAttention(hard=True)(**_tensors(_inputs(13)))


def test_hard_sid_level_mismatch():
    inputs = _tensors(_inputs(14))
    inputs["item_sids"] = tf.zeros([3, 7, 2], tf.int32)
    inputs["agent_sids"] = tf.zeros([3, 4, 3], tf.int32)
    with pytest.raises(ValueError, match=r"`agent_sids` has L = 3"):
        SoftRoutingAttention(hard=True)(**inputs)


# --- lean routing == the previous plain code; chunked == whole ------------


@pytest.mark.parametrize(
    "tau,s2",
    [
        pytest.param(1.0, None, id="tau1_per_user_scale"),
        pytest.param(0.3, 1.0, id="tau0.3_fixed_scale"),
        # Nearest item ~100 logit units away: the exact-max fallback.
        pytest.param(1e-3, 1.0, id="tiny_tau_exact_fallback"),
    ],
)
def test_lean_equals_reference(tau, s2):
    """float32, rtol 1e-5 (absolute 1e-5 on weights in [0, 1]), with a
    masked agent, masked items and an empty-history user."""
    inputs = _tensors(_inputs(31, length=40, agents=6))
    got = SoftRoutingAttention(temperature=tau, latent_variance=s2)(
        **inputs)
    want = ref_plain.soft_routing(**inputs, temperature=tau,
                                  latent_variance=s2)
    for key, value in zip(("states", "routing"), want):
        assert np.all(np.isfinite(got[key].numpy()))
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["states"][-1], 0.0)  # empty user


@pytest.mark.parametrize("chunk", [1, 3, 40, 64], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("tau", [0.5, 1e-3], ids=["tau0.5", "tiny_tau"])
def test_chunked_equals_whole(chunk, tau):
    inputs = _tensors(_inputs(32, length=40, agents=6))
    whole = SoftRoutingAttention(temperature=tau)(**inputs)
    layer = SoftRoutingAttention(temperature=tau, chunk_size=chunk)
    eager = layer(**inputs)
    graph = tf.function(lambda x: layer(**x))(inputs)
    # At tau = 1e-3 the logits are ||z - p||^2 / tau: float32 rounding of
    # the distances (1e-7 relative) moves them by ~1e-4, and the chunks'
    # different summation order shows up to ~1e-3 on a few weights (seen
    # with AVX2/FMA kernels); at tau = 0.5 the sums agree to 1e-6.
    tol = 1e-6 if tau >= 0.5 else 2e-3
    for got in (eager, graph):
        for key in ("states", "routing"):
            np.testing.assert_allclose(got[key], whole[key], rtol=1e-5,
                                       atol=tol)


def test_chunked_gradient_equals_whole():
    inputs = _tensors(_inputs(33, length=10))

    def grad(layer):
        with tf.GradientTape() as tape:
            tape.watch(inputs["values"])
            loss = tf.reduce_sum(tf.square(layer(**inputs)["states"]))
        return tape.gradient(loss, inputs["values"])

    np.testing.assert_allclose(
        grad(SoftRoutingAttention(chunk_size=4)),
        grad(SoftRoutingAttention()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [0, -2, 2.5, True, "8"],
                         ids=["zero", "negative", "float", "bool", "str"])
def test_chunk_size_rejects_bad_values(chunk):
    with pytest.raises(ValueError, match="chunk_size.*" + repr(chunk)[:3]):
        SoftRoutingAttention(chunk_size=chunk)


def test_chunk_size_in_config():
    layer = SoftRoutingAttention(temperature=0.5, chunk_size=128)
    again = SoftRoutingAttention.from_config(layer.get_config())
    assert again.chunk_size == 128
