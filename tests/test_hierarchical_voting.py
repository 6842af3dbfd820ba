"""HierarchicalVoting: golden cases, numpy reference, harness, errors."""

import os
import tempfile

import hisac_tf  # noqa: F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.hierarchical_voting import HierarchicalVoting
from tests.layer_harness import check_layer
from hisac_tf.testing.reference_voting import hierarchical_voting_reference

OUTPUT_KEYS = (
    "agent_sids", "agent_votes", "agent_weights", "agent_mask", "num_active"
)

# Each golden case: one user's history (valid SIDs, then `masked` items that
# must be ignored) and the agents worked out by hand, best first, as
# (SID path, votes, weight).
GOLDEN = [
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[2, 1], agents=5, temperature=1.0,
            # Level 1: codes 1, 2, 3 all have 2 votes -> keep 1 and 2 (the
            # smaller codes). Under 1: (1,2) and (1,3) tie at 1 -> (1,2);
            # under 2: (2,0) and (2,1) tie -> (2,0). (3,0) with 2 votes is
            # pruned at level 1. Final tie at 1 vote: smaller path first.
            items=[(1, 3), (3, 0), (2, 1), (1, 2), (3, 0), (2, 0)],
            masked=[],
            expected=[((1, 2), 1, 0.5), ((2, 0), 1, 0.5)],
        ),
        id="ties-L2",
    ),
    pytest.param(
        dict(
            sizes=[5], top_k=[3], agents=4, temperature=1.0,
            # Votes: 4 -> 2, 1 -> 2, 3 -> 2, 0 -> 1: all tie at 2, keep the
            # three smaller codes 1, 3, 4; 0 (1 vote) is the 4th -> pruned.
            items=[(4,), (1,), (3,), (0,), (3,), (1,), (4,)],
            masked=[],
            expected=[((1,), 2, 1 / 3), ((3,), 2, 1 / 3), ((4,), 2, 1 / 3)],
        ),
        id="ties-L1",
    ),
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[2, 2], agents=3, temperature=1.0,
            items=[(3, 1)],
            masked=[(0, 0), (0, 0), (0, 0)],
            expected=[((3, 1), 1, 1.0)],
        ),
        id="one_item-L2",
    ),
    pytest.param(
        dict(
            sizes=[3, 3, 3], top_k=[1, 1, 1], agents=2, temperature=0.5,
            items=[(2, 0, 1)] * 5,
            masked=[],
            expected=[((2, 0, 1), 5, 1.0)],
        ),
        id="one_leaf-L3",
    ),
    pytest.param(
        dict(
            sizes=[8], top_k=[8], agents=2, temperature=1.0,
            # Votes: 5 -> 3, 1 -> 2, 6 -> 2, 0 -> 1; all 4 kept by top_k,
            # capped at A = 2: 5 then (tie 1 vs 6) 1. w = 3/5, 2/5.
            items=[(5,), (6,), (5,), (1,), (0,), (6,), (5,), (1,)],
            masked=[],
            expected=[((5,), 3, 0.6), ((1,), 2, 0.4)],
        ),
        id="cap_at_A-L1",
    ),
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[4, 4], agents=2, temperature=1.0,
            # 4 kept leaves: (0,3) 3, (2,2) 2, (1,0) 2, (3,3) 1 -> A = 2
            # keeps (0,3) and, of the tied (1,0) / (2,2), the smaller path.
            items=[(2, 2), (0, 3), (1, 0), (3, 3), (0, 3), (2, 2), (1, 0),
                   (0, 3)],
            masked=[],
            expected=[((0, 3), 3, 0.6), ((1, 0), 2, 0.4)],
        ),
        id="cap_at_A-L2",
    ),
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[1, 1], agents=4, temperature=1.0,
            # The masked (OOV / padding) items would win with 3 votes, and
            # their garbage codes are out of range: both must be ignored.
            items=[(1, 1), (2, 0), (1, 1)],
            masked=[(0, 0), (0, 0), (0, 0), (-1, 99), (7, 7)],
            expected=[((1, 1), 2, 1.0)],
        ),
        id="mask_excludes-L2",
    ),
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[2, 2], agents=3, temperature=1.0,
            items=[],
            masked=[(1, 1), (2, 2), (1, 1), (3, 0)],
            expected=[],
        ),
        id="all_padding-L2",
    ),
    pytest.param(
        dict(
            sizes=[4, 4], top_k=[1, 2], agents=4, temperature=1.0,
            # Level 1: code 0 has 6 votes (2+2+2), code 1 has 5 (one leaf).
            # k_1 = 1 keeps code 0 only, so leaf (1,0) with 5 votes is pruned
            # while (0,0) and (0,1) with 2 votes each are kept ((0,2) loses
            # the tie to the smaller codes).
            items=[(1, 0)] * 5 + [(0, 2), (0, 1), (0, 0)] * 2,
            masked=[],
            expected=[((0, 0), 2, 0.5), ((0, 1), 2, 0.5)],
        ),
        id="hierarchy_prunes-L2",
    ),
    pytest.param(
        dict(
            sizes=[2, 3, 4], top_k=[2, 2, 1], agents=3, temperature=1.0,
            # Level 1: 0 -> 6, 1 -> 1, both kept. Level 2 under 0:
            # (0,0) 3, (0,1) 2, (0,2) 1 -> (0,0), (0,1); under 1: (1,2).
            # Level 3 (k=1): (0,0,0) 2 beats (0,0,1) 1; (0,1,3) 2; (1,2,3) 1.
            items=[(0, 0, 0), (0, 0, 1), (0, 1, 3), (0, 0, 0), (0, 2, 0),
                   (1, 2, 3), (0, 1, 3)],
            masked=[(1, 1, 1)],
            expected=[((0, 0, 0), 2, 0.4), ((0, 1, 3), 2, 0.4),
                      ((1, 2, 3), 1, 0.2)],
        ),
        id="three_levels-L3",
    ),
    pytest.param(
        dict(
            sizes=[4], top_k=[4], agents=4, temperature=0.5,
            # v = (3, 1); T = 0.5: v^2 = (9, 1) -> (0.9, 0.1).
            items=[(2,), (0,), (2,), (2,)],
            masked=[],
            expected=[((2,), 3, 0.9), ((0,), 1, 0.1)],
        ),
        id="temperature_half-L1",
    ),
    pytest.param(
        dict(
            sizes=[4, 2], top_k=[4, 2], agents=4, temperature=2.0,
            # v = (3, 1); T = 2: v^(1/2) = (sqrt 3, 1).
            items=[(2, 1), (0, 0), (2, 1), (2, 1)],
            masked=[],
            expected=[((2, 1), 3, np.sqrt(3) / (np.sqrt(3) + 1)),
                      ((0, 0), 1, 1 / (np.sqrt(3) + 1))],
        ),
        id="temperature_two-L2",
    ),
]


def _golden_batch(case):
    """[3, N, L] batch: the case's user, an all-padding user, the case's user
    with items in reverse order (item order must not matter)."""
    items = list(case["items"])
    masked = list(case["masked"])
    num_levels = len(case["sizes"])
    rows = items + masked
    num_items = max(len(rows), 1)
    sids = np.zeros((3, num_items, num_levels), np.int64)
    mask = np.zeros((3, num_items), bool)
    if rows:
        sids[0, : len(rows)] = rows
        sids[2, : len(rows)] = rows[::-1]
    sids[1] = 1  # padding user: codes present but all masked out
    mask[0, : len(items)] = True
    mask[2, len(masked): len(rows)] = True
    return sids, mask


@pytest.mark.parametrize("case", GOLDEN)
def test_golden(case):
    layer = HierarchicalVoting(
        case["sizes"], case["top_k"], case["agents"], case["temperature"]
    )
    sids, mask = _golden_batch(case)
    out = {k: v.numpy() for k, v in layer(sids, mask).items()}
    num_agents = case["agents"]
    num_levels = len(case["sizes"])
    expected = case["expected"]
    want_sids = np.zeros((num_agents, num_levels), np.int32)
    want_votes = np.zeros((num_agents,), np.float32)
    want_weights = np.zeros((num_agents,), np.float32)
    want_mask = np.zeros((num_agents,), bool)
    for a, (path, votes, weight) in enumerate(expected):
        want_sids[a] = path
        want_votes[a] = votes
        want_weights[a] = weight
        want_mask[a] = True
    for b in (0, 2):
        np.testing.assert_array_equal(out["agent_sids"][b], want_sids)
        np.testing.assert_array_equal(out["agent_votes"][b], want_votes)
        np.testing.assert_allclose(
            out["agent_weights"][b], want_weights, rtol=1e-6, atol=1e-7
        )
        np.testing.assert_array_equal(out["agent_mask"][b], want_mask)
        assert out["num_active"][b] == len(expected)
    # The all-padding user: no agents, finite zeros.
    assert out["num_active"][1] == 0
    for key in ("agent_sids", "agent_votes", "agent_weights", "agent_mask"):
        assert not np.any(out[key][1]), key
    assert np.all(np.isfinite(out["agent_weights"]))
    assert out["agent_sids"].dtype == np.int32
    assert out["num_active"].dtype == np.int32
    assert out["agent_votes"].dtype == np.float32
    assert out["agent_weights"].dtype == np.float32


def test_golden_against_reference():
    # The reference agrees with every hand-computed case too.
    for param in GOLDEN:
        case = param.values[0]
        sids, mask = _golden_batch(case)
        ref = hierarchical_voting_reference(
            sids, mask, case["top_k"], case["agents"], case["temperature"]
        )
        got = [
            (tuple(ref["agent_sids"][0, a]), ref["agent_votes"][0, a],
             ref["agent_weights"][0, a])
            for a in range(ref["num_active"][0])
        ]
        assert [(p, v) for p, v, _ in got] == [
            (p, v) for p, v, _ in case["expected"]
        ], param.id
        np.testing.assert_allclose(
            [w for _, _, w in got], [w for _, _, w in case["expected"]],
            rtol=1e-6,
        )


def _random_case(seed):
    """Random sizes / top_k / A / T and a B = 8 batch with random masks."""
    rng = np.random.default_rng(seed)
    num_levels = int(rng.integers(1, 4))
    sizes = [int(k) for k in rng.integers(1, 9, size=num_levels)]
    top_k = [int(k) for k in rng.integers(1, 5, size=num_levels)]
    num_agents = int(rng.integers(1, 12))
    temperature = float(rng.choice([0.5, 1.0, 3.0]))
    batch, hist_len = 8, int(rng.integers(1, 201))
    # Skewed codes so that votes differ and ties still happen.
    sids = np.stack(
        [
            np.minimum(rng.geometric(0.35, size=(batch, hist_len)) - 1, k - 1)
            for k in sizes
        ],
        axis=-1,
    )
    keep = rng.random((batch, 1)) * 1.2  # some users empty, some full
    mask = rng.random((batch, hist_len)) < keep
    mask[0] = False  # always one all-padding user
    # Masked-out items carry garbage codes (OOV): must not matter.
    sids = np.where(mask[..., None], sids, -7)
    return dict(
        sizes=sizes, top_k=top_k, num_agents=num_agents,
        temperature=temperature, sids=sids, mask=mask,
    )


def _assert_matches(out, ref):
    for key in OUTPUT_KEYS:
        got = out[key].numpy() if hasattr(out[key], "numpy") else out[key]
        if key == "agent_weights":
            np.testing.assert_allclose(got, ref[key], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, ref[key], err_msg=key)


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}")
                                  for s in range(6)])
def test_matches_reference(seed):
    c = _random_case(seed)
    layer = HierarchicalVoting(
        c["sizes"], c["top_k"], c["num_agents"], c["temperature"]
    )
    ref = hierarchical_voting_reference(
        c["sids"], c["mask"], c["top_k"], c["num_agents"], c["temperature"]
    )
    _assert_matches(layer(c["sids"], c["mask"]), ref)

    num_levels = len(c["sizes"])
    graph_fn = tf.function(
        lambda s, m: layer(s, m),
        input_signature=[
            tf.TensorSpec([None, None, num_levels], tf.int32),
            tf.TensorSpec([None, None], tf.bool),
        ],
    )
    _assert_matches(
        graph_fn(tf.constant(c["sids"], tf.int32), tf.constant(c["mask"])),
        ref,
    )


def test_reference_many_small_cases():
    # Many tiny trees, where ties and pruning dominate; one traced function
    # per (sizes, top_k) config, unknown B and N.
    rng = np.random.default_rng(123)
    for trial in range(25):
        num_levels = int(rng.integers(1, 4))
        sizes = [int(k) for k in rng.integers(1, 4, size=num_levels)]
        top_k = [int(k) for k in rng.integers(1, 3, size=num_levels)]
        num_agents = int(rng.integers(1, 5))
        hist_len = int(rng.integers(0, 12))
        sids = np.stack(
            [rng.integers(0, k, size=(8, hist_len)) for k in sizes], axis=-1
        ).reshape(8, hist_len, num_levels)
        mask = rng.random((8, hist_len)) < 0.7
        layer = HierarchicalVoting(sizes, top_k, num_agents)
        ref = hierarchical_voting_reference(sids, mask, top_k, num_agents)
        try:
            _assert_matches(layer(sids, mask), ref)
        except AssertionError as err:
            raise AssertionError(
                f"trial {trial}: sizes={sizes} top_k={top_k} "
                f"A={num_agents}\nsids={sids.tolist()}\n"
                f"mask={mask.tolist()}"
            ) from err


def test_input_signature_unknown_batch_and_length():
    layer = HierarchicalVoting([6, 5, 4], [3, 2, 2], num_agents=7)
    fn = tf.function(
        lambda s, m: layer(s, m),
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.int64),
            tf.TensorSpec([None, None], tf.bool),
        ],
    )
    concrete = fn.get_concrete_function()
    assert concrete.structured_outputs["agent_sids"].shape.as_list() == [
        None, 7, 3
    ]
    assert concrete.structured_outputs["num_active"].shape.as_list() == [
        None
    ]
    rng = np.random.default_rng(5)
    for batch, hist_len in [(1, 1), (4, 30), (2, 0), (0, 3)]:
        sids = np.stack(
            [rng.integers(0, k, size=(batch, hist_len)) for k in (6, 5, 4)],
            axis=-1,
        ).reshape(batch, hist_len, 3)
        mask = rng.random((batch, hist_len)) < 0.8
        out = concrete(tf.constant(sids), tf.constant(mask))
        ref = hierarchical_voting_reference(sids, mask, [3, 2, 2], 7)
        _assert_matches(out, ref)
        assert out["agent_sids"].shape == (batch, 7, 3)


def test_saved_model_signature_round_trip():
    # What the export does: a SavedModel signature with unknown B and N.
    layer = HierarchicalVoting([8, 8], [3, 2], num_agents=5, temperature=2.0)
    module = tf.Module()
    module.layer = layer
    module.vote = tf.function(
        lambda sids, mask: layer(sids, mask),
        input_signature=[
            tf.TensorSpec([None, None, 2], tf.int64, name="sids"),
            tf.TensorSpec([None, None], tf.bool, name="mask"),
        ],
    )
    c = _random_case(11)
    sids = np.minimum(np.abs(c["sids"][..., :1]), 7)
    sids = np.concatenate([sids, 7 - sids], axis=-1)
    mask = c["mask"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "voting")
        tf.saved_model.save(
            module, path, signatures={"serving_default": module.vote}
        )
        loaded = tf.saved_model.load(path)
        out = loaded.signatures["serving_default"](
            sids=tf.constant(sids), mask=tf.constant(mask)
        )
    ref = hierarchical_voting_reference(sids, mask, [3, 2], 5, 2.0)
    _assert_matches(out, ref)


def test_shared_harness():
    rng = np.random.default_rng(1)
    sids = tf.constant(
        np.stack([rng.integers(0, k, size=(3, 9)) for k in (5, 4)], -1),
        tf.int32,
    )
    mask = tf.constant(rng.random((3, 9)) < 0.7)
    out = check_layer(
        lambda: HierarchicalVoting([5, 4], [2, 2], num_agents=3),
        {"sids": sids, "mask": mask},
        train=False,
    )
    ref = hierarchical_voting_reference(sids.numpy(), mask.numpy(), [2, 2], 3)
    _assert_matches(out, ref)


def test_config_round_trip_values():
    layer = HierarchicalVoting(
        (np.int64(512), 512), [20, 10], num_agents=200, temperature=2,
        name="vote",
    )
    config = layer.get_config()
    assert config["codebook_sizes"] == [512, 512]
    assert config["top_k"] == [20, 10]
    assert config["num_agents"] == 200
    assert config["temperature"] == 2.0
    clone = HierarchicalVoting.from_config(config)
    assert clone.get_config() == config
    assert not layer.trainable_weights


@pytest.mark.parametrize(
    "kwargs, field",
    [
        pytest.param(dict(codebook_sizes=[4, 4], top_k=[2]), "top_k",
                     id="top_k_length"),
        pytest.param(dict(codebook_sizes=[4, 4], top_k=[2, 0]), "top_k",
                     id="top_k_zero"),
        pytest.param(dict(codebook_sizes=[4, 0], top_k=[2, 2]),
                     "codebook_sizes", id="codebook_zero"),
        pytest.param(dict(codebook_sizes=[], top_k=[]), "codebook_sizes",
                     id="no_levels"),
        pytest.param(dict(codebook_sizes=[4.5], top_k=[2]), "codebook_sizes",
                     id="codebook_float"),
        pytest.param(dict(codebook_sizes=4, top_k=[2]), "codebook_sizes",
                     id="codebook_not_sequence"),
        pytest.param(dict(codebook_sizes=[2**20, 2**20], top_k=[1, 1]),
                     "codebook_sizes", id="too_many_leaves"),
        pytest.param(dict(num_agents=0), "num_agents", id="agents_zero"),
        pytest.param(dict(num_agents=2.0), "num_agents", id="agents_float"),
        pytest.param(dict(temperature=0.0), "temperature", id="temp_zero"),
        pytest.param(dict(temperature=-1.0), "temperature", id="temp_neg"),
        pytest.param(dict(temperature=float("nan")), "temperature",
                     id="temp_nan"),
    ],
)
def test_constructor_errors(kwargs, field):
    args = dict(codebook_sizes=[4, 4], top_k=[2, 2], num_agents=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field) as info:
        HierarchicalVoting(**args)
    # The message shows the received value.
    assert repr(args[field]) in str(info.value)


def test_call_errors():
    layer = HierarchicalVoting([4, 4], [2, 2], num_agents=3)
    mask = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match=r"sids' last dimension .* 2"):
        layer(np.zeros((2, 3, 3), np.int32), mask)
    with pytest.raises(ValueError, match=r"sids must be \[B, N, L\]"):
        layer(np.zeros((2, 3), np.int32), mask)
    with pytest.raises(ValueError, match="mask is required"):
        layer(np.zeros((2, 3, 2), np.int32))
    with pytest.raises(ValueError, match="sids must be an integer"):
        layer(np.zeros((2, 3, 2), np.float32), mask)
    with pytest.raises(ValueError, match="disagree"):
        layer(np.zeros((2, 3, 2), np.int32), np.ones((2, 4), bool))
    bad = np.zeros((2, 3, 2), np.int32)
    bad[1, 2, 1] = 4  # code 4 at a level of size 4, on a valid item
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="sids of valid items must be < codebook_sizes"):
        layer(bad, mask)
    bad[1, 2, 1] = -1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="sids of valid items must be >= 0"):
        layer(bad, mask)
    # Unknown last dimension at trace time: checked when run.
    fn = tf.function(
        lambda s, m: layer(s, m),
        input_signature=[
            tf.TensorSpec([None, None, None], tf.int32),
            tf.TensorSpec([None, None], tf.bool),
        ],
    )
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="last dimension must be L = 2"):
        fn(tf.zeros((2, 3, 3), tf.int32), tf.constant(mask))


def test_mixed_precision_policy_keeps_float32_outputs():
    # The model may run under mixed_float16: votes and weights stay float32.
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = HierarchicalVoting([4], [4], num_agents=3, temperature=0.5)
        out = layer(np.array([[[2], [0], [2], [2]]]), np.ones((1, 4), bool))
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    assert out["agent_weights"].dtype == tf.float32
    assert out["agent_votes"].dtype == tf.float32
    np.testing.assert_allclose(out["agent_weights"].numpy()[0],
                               [0.9, 0.1, 0.0], rtol=1e-6)
