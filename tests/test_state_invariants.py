"""score_with_state refuses a state encode_user could not give (issue 22,
item 4): keys and values of 3e38 or count_lengths = -5 were scored (every
candidate 0.4976). Magnitudes are bounded by what the export measured on
real requests; count lengths lie in [0, N] and counts in [0, length]."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export import signatures as sig
from hisac_tf.models.build import build_model
from tests.test_hisac_ranker import random_batch, random_tables

CFG = config_lib.load_config("tiny")  # two branches, match counts on
SPEC = FeatureSpec.from_config(CFG.data)


@pytest.fixture(scope="module")
def served():
    model = build_model(CFG, SPEC, random_tables())
    batch = random_batch(b=4)
    model(batch)
    module = sig.ServingModule(model, SPEC, version=1)
    bounds = module.record_state_bounds(batch)
    request = {k: v for k, v in batch.items() if k != "labels"}
    state = {k: v.numpy() for k, v in module.encode_user(
        {k: request[k] for k in module.user_input_names}).items()}
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    want = module.serving_default(request)[sig.CTR].numpy()
    return module, bounds, state, cands, want


def score(module, state, cands):
    inputs = {k: tf.constant(v) for k, v in state.items()}
    return module.score_with_state({**inputs, **cands})[sig.CTR].numpy()


def test_bounds_are_recorded_from_real_requests(served):
    module, bounds, state, cands, want = served
    assert set(bounds) == {"keys", "values", "bias", "short_keys",
                           "short_values", "short_bias", "count_gaps",
                           "user_embedding"}
    for name, bound in bounds.items():
        x = np.abs(state[name])
        if name.endswith("bias"):
            x = np.where(state[name.replace("bias", "mask")] == 1, x, 0)
        assert bound == pytest.approx(
            max(sig.STATE_BOUND_FACTOR * max(x.max(), 1.0),
                sig.MAX_GAP_HOURS if name == "count_gaps" else 0), rel=1e-6)
        assert float(module.state_bounds[name].numpy()) == pytest.approx(
            bound, rel=1e-6)
    np.testing.assert_allclose(score(module, state, cands), want, atol=1e-5)


@pytest.mark.parametrize("name, index, value, message", [
    ("keys", (0, 0, 0, 0), 3e38, r"keys must lie within \+-bound"),
    ("values", (1, 1, 0, 0), -3e38, r"values must lie within \+-bound"),
    ("user_embedding", (0, 3), 1e30, "user_embedding must lie within"),
    ("short_keys", (0, 0, 0, 1), 3e38, "short_keys must lie within"),
    ("count_gaps", (0, 0, 0), 1e20, "count_gaps must lie within"),
    ("count_lengths", (0, 0), -5.0,
     r"count_lengths must lie in \[0, N\] \(behaviours per key type\); "
     r"N =\] \[20\] \[; got\] \[-5\] \[at request\] \[0\] "
     r"\[position\] \[0\]"),
    ("count_lengths", (2, 1), 21.0, r"count_lengths must lie in \[0, N\]"),
    ("count_values", (0, 0, 0), -1.0,
     r"count_values must lie in \[0, count_lengths\]"),
], ids=["keys_3e38", "values_-3e38", "user_embedding", "short_keys",
        "count_gaps", "count_lengths_-5", "count_lengths_past_N",
        "count_values_negative"])
def test_absurd_state_is_refused_naming_the_input(served, name, index,
                                                  value, message):
    module, _, state, cands, _ = served
    bad = {k: v.copy() for k, v in state.items()}
    bad[name][index] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        score(module, bad, cands)


def test_counts_past_their_length_are_refused(served):
    module, _, state, cands, _ = served
    bad = {k: v.copy() for k, v in state.items()}
    bad["count_values"][0, 0, 0] = bad["count_lengths"][0, 0] + 1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="count_values must lie in"):
        score(module, bad, cands)


def test_a_masked_agents_bias_is_ignored(served):
    module, bounds, state, cands, want = served
    mask = state["mask"] == 0
    assert mask.any()  # the empty-history user at least
    odd = {k: v.copy() for k, v in state.items()}
    odd["bias"][mask] = 3e38  # Far past the bound, but on no agent.
    np.testing.assert_allclose(score(module, odd, cands), want, atol=1e-5)
    odd["bias"][~mask] = 2 * bounds["bias"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="bias must lie within"):
        score(module, odd, cands)


@pytest.mark.slow
def test_bounds_travel_with_the_saved_model(served, tmp_path):
    module, bounds, state, cands, _ = served
    path = str(tmp_path / "1")
    tf.saved_model.save(module, path, signatures=module.signatures())
    loaded = tf.saved_model.load(path)
    bad = {k: v.copy() for k, v in state.items()}
    bad["keys"][0, 0, 0, 0] = 3e38
    fn = loaded.signatures[sig.SCORE_WITH_STATE]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="keys must lie within"):
        fn(**{k: tf.constant(v) for k, v in bad.items()}, **cands)
