"""routing_diagnostics: hand-computed cases, hard routing, errors."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.routing_diagnostics import routing_diagnostics
from hisac_tf.layers.soft_routing_attention import SoftRoutingAttention

# User 0: item SIDs (0,1), (0,1), (2,0), all valid; agents (0,1), (2,0)
#   and a padding agent.
#   agent 0: alpha (.5, .5, 0): entropy ln 2, effective items 2; every
#     item with mass has its SID: off-SID mass 0.
#   agent 1: alpha (.25, .25, .5): entropy .5 ln 4 + .5 ln 2 = 1.5 ln 2,
#     effective items 2^1.5 = 2.8284271; items 0 and 1 are outside its
#     SID: off-SID mass .5.
#   means over the 2 real agents: (2 + 2.8284271) / 2 = 2.4142136, .25.
# User 1: items (1,0), (1,1) valid, a padding item; one agent (1,1),
#   alpha (.9, .1, 0): entropy -(.9 ln .9 + .1 ln .1) = .3250830,
#   effective items e^.3250830 = 1.3841459; item 0 differs at level 2:
#   off-SID mass .9.
# User 2: no valid item, one real agent: 0, 0, 1 agent.
ALPHA = [
    [[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.0, 0.0, 0.0]],
    [[0.9, 0.1, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
]
AGENT_SIDS = [[[0, 1], [2, 0], [0, 0]],
              [[1, 1], [0, 0], [0, 0]],
              [[0, 0], [0, 0], [0, 0]]]
ITEM_SIDS = [[[0, 1], [0, 1], [2, 0]],
             [[1, 0], [1, 1], [0, 0]],
             [[0, 0], [0, 0], [0, 0]]]
AGENT_MASK = [[True, True, False], [True, False, False],
              [True, False, False]]
ITEM_VALID = [[True, True, True], [True, True, False],
              [False, False, False]]


def test_hand_computed_values():
    d = routing_diagnostics(ALPHA, AGENT_SIDS, ITEM_SIDS, AGENT_MASK,
                            ITEM_VALID)
    np.testing.assert_allclose(d["effective_items_per_agent"],
                               [2.4142136, 1.3841459, 0.0], atol=1e-6)
    np.testing.assert_allclose(d["off_sid_mass"], [0.25, 0.9, 0.0],
                               atol=1e-6)
    np.testing.assert_array_equal(d["agents_per_user"], [2.0, 1.0, 1.0])


def test_graph_mode_with_unknown_shapes():
    spec = [tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, None, None], tf.int32),
            tf.TensorSpec([None, None, None], tf.int32),
            tf.TensorSpec([None, None], tf.bool),
            tf.TensorSpec([None, None], tf.bool)]
    fn = tf.function(routing_diagnostics, input_signature=spec)
    got = fn(tf.constant(ALPHA), tf.constant(AGENT_SIDS),
             tf.constant(ITEM_SIDS), tf.constant(AGENT_MASK),
             tf.constant(ITEM_VALID))
    want = routing_diagnostics(ALPHA, AGENT_SIDS, ITEM_SIDS, AGENT_MASK,
                               ITEM_VALID)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6)


@pytest.mark.parametrize("tau,sharp", [pytest.param(1e-4, True, id="tiny"),
                                       pytest.param(10.0, False, id="soft")])
def test_hard_routing_has_no_off_sid_mass(tau, sharp):
    # Latents equal their SID's prototype: tiny tau is hard routing (off-SID
    # mass 0, effective items = items per SID); a large tau spreads.
    sids = np.array([[[0, 0], [0, 0], [1, 0], [1, 1]]], np.int32)
    proto = {(0, 0): [0.0, 0.0], (1, 0): [3.0, 0.0], (1, 1): [3.0, 3.0]}
    latents = np.array([[proto[tuple(s)] for s in sids[0]]], np.float32)
    agent_sids = np.array([[[0, 0], [1, 0], [1, 1]]], np.int32)
    prototypes = np.array([[proto[tuple(s)] for s in agent_sids[0]]],
                          np.float32)
    mask = np.ones((1, 4), bool)
    agents = np.ones((1, 3), bool)
    out = SoftRoutingAttention(temperature=tau)(
        latents=latents, values=np.ones((1, 4, 2), np.float32),
        prototypes=prototypes, history_mask=mask, agent_mask=agents)
    d = routing_diagnostics(out["routing"], agent_sids, sids, agents, mask)
    if sharp:
        np.testing.assert_allclose(d["off_sid_mass"], [0.0], atol=1e-6)
        # Items per agent 2, 1, 1: mean 4/3.
        np.testing.assert_allclose(d["effective_items_per_agent"], [4 / 3],
                                   atol=1e-5)
    else:
        assert float(d["off_sid_mass"][0]) > 0.3
        assert float(d["effective_items_per_agent"][0]) > 3.0
    assert float(d["agents_per_user"][0]) == 3.0


@pytest.mark.parametrize("change,match", [
    pytest.param({"alpha": np.zeros((3, 3))}, r"`alpha` must have shape",
                 id="alpha_rank"),
    pytest.param({"item_sids": np.zeros((3, 4, 2), np.int32)},
                 r"`item_sids` has N = 4", id="item_sids_N"),
    pytest.param({"agent_sids": np.zeros((3, 3, 3), np.int32)},
                 r"`item_sids` has L = 2", id="levels"),
    pytest.param({"agent_mask": np.ones((2, 3), bool)},
                 r"`agent_mask` has B = 2", id="agent_mask_B"),
])
def test_shape_errors_name_the_argument(change, match):
    args = {"alpha": ALPHA, "agent_sids": AGENT_SIDS,
            "item_sids": ITEM_SIDS, "agent_mask": AGENT_MASK,
            "item_valid": ITEM_VALID}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        routing_diagnostics(**args)
