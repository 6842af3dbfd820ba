"""Every history compressor behind one interface (docs/design.md §3).

Per compressor: the shared layer harness, shapes and masks, an all-padding
history, tracing with unknown B and N, mixed precision, one training step
of the ranker, and a SavedModel round trip of the ranker (export and
serve). Golden hand-computed values for patching, recent, hard routing,
the sim_hard candidate mask and the FLOPs count; k-means and SimHash
against plain numpy references.
"""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.compressors import COMPRESSOR_NAMES, GROUP_KEYS, make_compressor
from hisac_tf.compressors.history_compressor import DIAGNOSTIC_KEYS
from hisac_tf.compressors import flops as flops_lib
from hisac_tf.compressors.compressor_sizes import CompressorSizes
from hisac_tf.compressors.hisac_compressor import HiSACCompressor
from hisac_tf.compressors.kmeans_compressor import KMeansCompressor
from hisac_tf.compressors.lsh_compressor import LSHCompressor
from hisac_tf.compressors.patching_compressor import PatchingCompressor
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.compressors.sim_hard_compressor import (
    SimHardCompressor,
    category_mask,
    category_masked_attention,
)
from hisac_tf.config import ConfigError
from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.models.build import build_model, build_optimizer
from tests.layer_harness import check_layer
from tests.test_hisac_ranker import SPEC, random_batch, random_tables

B, N, D, DS = 3, 7, 4, 3
SIZES = (3, 2)
A = 3
NAMES = [pytest.param(name, id=name) for name in COMPRESSOR_NAMES]


def history_inputs(seed=0, batch=B, length=N, d=D, ds=DS):
    """Random compressor inputs: user 0 full, user 1 holed with an OOV
    item, the last user all padding."""
    rng = np.random.default_rng(seed)
    valid = np.ones((batch, length), bool)
    valid[1, [1, 4]] = False
    valid[-1] = False
    has_sid = np.ones((batch, length), bool)
    has_sid[1, 2] = False  # an OOV item
    sids = np.stack(
        [rng.integers(0, k, (batch, length)) for k in SIZES], -1
    ).astype(np.int32)
    sids = np.where(has_sid[..., None], sids, 0).astype(np.int32)
    latents = rng.normal(size=(batch, length, ds)).astype(np.float32)
    latents = np.where(has_sid[..., None], latents, 0).astype(np.float32)
    return {
        "values": tf.constant(
            rng.normal(size=(batch, length, d)).astype(np.float32)),
        "valid": tf.constant(valid),
        "latents": tf.constant(latents),
        "sids": tf.constant(sids),
        "has_sid": tf.constant(has_sid),
        "timestamps": tf.constant(
            np.where(valid, np.arange(1, length + 1)[None] * 60, 0)),
        "categories": tf.constant(
            np.where(valid, rng.integers(1, 3, (batch, length)), 0)),
        "codebooks": tf.constant(
            rng.normal(size=(sum(SIZES), ds)).astype(np.float32)),
    }


def factory(name, groups=A, max_history=N):
    return lambda: make_compressor(
        name, num_groups=groups, codebook_sizes=SIZES, top_k=(2, 2),
        latent_dim=DS, max_history=max_history, num_heads=2,
        kmeans_iterations=2,
    )


# --- the interface, per compressor ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_harness_shapes_masks_and_empty_history(name):
    inputs = history_inputs()
    out = check_layer(factory(name), inputs)
    layer = factory(name)()
    g = N if name in ("full", "sim_hard") else A
    assert layer.num_groups == g
    keys = GROUP_KEYS + (("group_categories",) if name == "sim_hard"
                         else ())
    assert sorted(k for k in out if k not in DIAGNOSTIC_KEYS) == sorted(keys)
    assert out["group_states"].shape == (B, g, D)
    assert out["group_mask"].shape == (B, g)
    assert out["group_mask"].dtype == tf.bool
    assert out["group_prior"].shape == (B, g)
    assert out["group_prior"].dtype == tf.float32
    assert out["group_sids"].shape[:2] == (B, g)
    assert out["num_active"].shape == (B,)
    mask = out["group_mask"].numpy()
    states = out["group_states"].numpy()
    prior = out["group_prior"].numpy()
    np.testing.assert_array_equal(out["num_active"].numpy(), mask.sum(1))
    # Masked groups: zero state, zero prior, no SID.
    assert np.all(states[~mask] == 0.0)
    assert np.all(prior[~mask] == 0.0)
    assert not np.any(out["group_sid_mask"].numpy()[~mask])
    # The all-padding user: nothing active, all zeros, finite.
    assert not mask[-1].any()
    assert np.all(states[-1] == 0.0)
    # Users with history get at least one group.
    assert mask[0].any() and mask[1].any()


@pytest.mark.parametrize("name", NAMES)
def test_traces_with_unknown_batch_and_length(name):
    layer = factory(name)()
    inputs = history_inputs()
    specs = {
        k: tf.TensorSpec([None] * (v.shape.rank - 1) + [v.shape[-1]]
                         if v.shape.rank == 3 else [None] * v.shape.rank,
                         v.dtype)
        for k, v in inputs.items()
    }
    specs["codebooks"] = tf.TensorSpec([None, DS], tf.float32)
    fn = tf.function(lambda x: layer(**x), input_signature=[specs])
    traced = fn(inputs)
    eager = layer(**inputs)
    for key in traced:
        np.testing.assert_allclose(traced[key].numpy(), eager[key].numpy(),
                                   atol=1e-5)
    # An empty history axis (N = 0) still gives finite zeros.
    empty = {k: (v[:, :0] if k != "codebooks" else v)
             for k, v in inputs.items()}
    out = fn(empty)
    assert not out["group_mask"].numpy().any()
    assert np.all(out["group_states"].numpy() == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_float16_finite_and_close(name):
    inputs = history_inputs()
    want = factory(name)()(**inputs)
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = factory(name)()
        if layer.weights or name == "aggregator":
            layer(**inputs)
        got = layer(**inputs)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert got["group_states"].dtype == tf.float16
    assert got["group_prior"].dtype == tf.float32
    assert np.all(np.isfinite(got["group_states"].numpy()))
    np.testing.assert_array_equal(got["group_mask"], want["group_mask"])
    if name != "aggregator":  # Its weights are initialised afresh.
        np.testing.assert_allclose(
            got["group_states"].numpy().astype(np.float32),
            want["group_states"].numpy(), atol=2e-2)


@pytest.mark.parametrize("name", NAMES)
def test_ranker_trains_one_step(name):
    cfg = config_lib.load_config("tiny", [f'model.compressor="{name}"'])
    model = build_model(cfg, SPEC, random_tables())
    optimizer = build_optimizer(cfg, model)
    batch = random_batch()
    state = model.compress_user(batch)
    g = cfg.data.max_history if name in ("full", "sim_hard") else (
        cfg.model.num_agents)
    assert model.num_groups == g
    assert state["keys"].shape[2] == g and state["mask"].shape == (3, g)
    assert int(state["num_active"][-1]) == 0  # the empty history
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    assert np.isfinite(float(loss))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    named = {v.name: g for v, g in zip(variables, grads)}
    assert any(g is not None for n, g in named.items()
               if "item_embedding" in n)
    if name == "aggregator":
        assert all(named[v.name] is not None
                   for v in model.compressor.trainable_weights)
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables) if g is not None])
    assert any(not np.allclose(b, v.numpy())
               for b, v in zip(before, variables))
    assert np.all(np.isfinite(model(batch).numpy()))


SERVE_SPEC = {
    **{k: tf.TensorSpec([None], tf.int64, name=k)
       for k in ("user_id", "request_time", "gender", "age_bucket")},
    **{k: tf.TensorSpec([None, None], tf.int64, name=k)
       for k in ("hist_item_ids", "hist_category_ids", "hist_behaviors",
                 "hist_timestamps", "cand_item_ids", "cand_category_ids")},
    "hist_length": tf.TensorSpec([None], tf.int32, name="hist_length"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_ranker_exports_and_serves(name, tmp_path):
    """A SavedModel of the ranker (unknown R, N, C) scores as in Python."""
    cfg = config_lib.load_config("tiny", [f'model.compressor="{name}"'])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    features = {k: batch[k] for k in SERVE_SPEC}
    want = tf.sigmoid(model(features)).numpy()
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serve = tf.function(
        lambda f: {"ctr": tf.sigmoid(model(f, training=False))},
        input_signature=[SERVE_SPEC])
    path = os.path.join(tmp_path, "saved")
    tf.saved_model.save(module, path,
                        signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](**features)["ctr"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # A shorter history and fewer candidates go through the same graph.
    short = {k: (v[:, :5] if k.startswith(("hist_item", "hist_cat",
                                            "hist_beh", "hist_time",
                                            "cand_"))
                 else v) for k, v in features.items()}
    short["hist_length"] = tf.minimum(features["hist_length"], 5)
    got = loaded.signatures["serving_default"](**short)["ctr"].numpy()
    np.testing.assert_allclose(
        got, tf.sigmoid(model(short)).numpy(), atol=1e-5)


# --- golden values ----------------------------------------------------------

# One user, N = 7, D = 2, h at position p = (p + 1, (p + 1)^2); valid
# positions 0, 2, 3, 5, 6 (n = 5); a second user with one valid item at
# position 0; a third with none.
GOLD_VALID = np.array([
    [1, 0, 1, 1, 0, 1, 1],
    [1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
], bool)


def _gold_values():
    p = np.arange(1, 8, dtype=np.float32)
    return tf.constant(np.stack([np.stack([p, p ** 2], -1)] * 3))


def test_patching_golden():
    # User 0: m = min(A=2, n=5) = 2; rank r -> chunk floor(2 r / 5):
    # r = 0, 1, 2 (positions 0, 2, 3) -> 0; r = 3, 4 (positions 5, 6) -> 1.
    # Chunk 0 = mean((1, 1), (3, 9), (4, 16)) = (8/3, 26/3);
    # chunk 1 = mean((6, 36), (7, 49)) = (6.5, 42.5).
    # User 1: n = 1 -> m = 1, one chunk (1, 1), slot 1 masked.
    out = PatchingCompressor(2)(_gold_values(), valid=GOLD_VALID)
    np.testing.assert_allclose(out["group_states"].numpy(), [
        [[8 / 3, 26 / 3], [6.5, 42.5]],
        [[1, 1], [0, 0]],
        [[0, 0], [0, 0]],
    ], rtol=1e-6)
    np.testing.assert_array_equal(
        out["group_mask"], [[1, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(out["num_active"], [2, 1, 0])
    np.testing.assert_array_equal(out["group_prior"], np.zeros((3, 2)))


def test_patching_more_patches_than_items_golden():
    # A = 4 > n = 3 (positions 0, 1, 2): one item per chunk, prefix slots.
    valid = np.array([[1, 1, 1, 0, 0, 0, 0]], bool)
    out = PatchingCompressor(4)(_gold_values()[:1], valid=valid)
    np.testing.assert_allclose(out["group_states"].numpy()[0],
                               [[1, 1], [2, 4], [3, 9], [0, 0]])
    np.testing.assert_array_equal(out["group_mask"], [[1, 1, 1, 0]])


def test_recent_golden():
    # The newest A = 3 valid items of user 0 are positions 3, 5, 6, in
    # slots 0, 1, 2 (oldest first); user 1 has one item (slot 0).
    sids = np.arange(3 * 7 * 2, dtype=np.int32).reshape(3, 7, 2) % 5
    has_sid = np.ones((3, 7), bool)
    has_sid[0, 5] = False  # position 5 is OOV: its SID is masked
    out = RecentCompressor(3)(
        _gold_values(), valid=GOLD_VALID, sids=sids, has_sid=has_sid)
    np.testing.assert_allclose(out["group_states"].numpy(), [
        [[4, 16], [6, 36], [7, 49]],
        [[1, 1], [0, 0], [0, 0]],
        [[0, 0], [0, 0], [0, 0]],
    ])
    np.testing.assert_array_equal(
        out["group_mask"], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out["group_sids"].numpy()[0],
                                  sids[0, [3, 5, 6]])
    np.testing.assert_array_equal(out["group_sid_mask"],
                                  [[1, 0, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out["num_active"], [3, 1, 0])


def _hard_case():
    # Positions 0..5, all valid; SIDs (sizes (2, 2)):
    #   p0 (0,1)  p1 (1,0)  p2 (0,1)  p3 (0,0)  p4 (0,1)  p5 OOV (0,0)
    # Votes: leaf (0,1) = 3, (0,0) = 1, (1,0) = 1 (p5 has no SID: no vote);
    # level 1: node 0 = 4, node 1 = 1.
    p = np.arange(1, 7, dtype=np.float32)
    values = tf.constant(np.stack([p, p ** 2], -1)[None])  # [1, 6, 2]
    sids = np.array([[[0, 1], [1, 0], [0, 1], [0, 0], [0, 1], [0, 0]]],
                    np.int32)
    has_sid = np.array([[1, 1, 1, 1, 1, 0]], bool)
    return dict(values=values, valid=np.ones((1, 6), bool),
                latents=np.zeros((1, 6, 2), np.float32), sids=sids,
                has_sid=has_sid,
                codebooks=np.zeros((4, 2), np.float32))


def test_hard_routing_golden():
    # top_k (2, 2) keeps every leaf; agents by (-votes, path):
    # (0,1) [3 votes], (0,0) [1, path 0], (1,0) [1, path 2].
    # Hard routing: u_a = mean h of the agent's own items:
    # (0,1): mean of p0, p2, p4 = ((1+3+5)/3, (1+9+25)/3) = (3, 35/3);
    # (0,0): p3 only (p5 is OOV) = (4, 16); (1,0): p1 = (2, 4).
    # Prior log w, w = v / 5 (T = 1): log(3/5), log(1/5), log(1/5).
    layer = HiSACCompressor((2, 2), (2, 2), 3, hard_routing=True)
    out = layer(**_hard_case())
    np.testing.assert_array_equal(out["group_sids"].numpy()[0],
                                  [[0, 1], [0, 0], [1, 0]])
    np.testing.assert_allclose(out["group_states"].numpy()[0],
                               [[3, 35 / 3], [4, 16], [2, 4]], rtol=1e-6)
    np.testing.assert_allclose(
        out["group_prior"].numpy()[0],
        [math.log(3 / 5), math.log(1 / 5), math.log(1 / 5)], rtol=1e-6)
    np.testing.assert_array_equal(out["num_active"], [3])


def test_voting_versus_no_voting_golden():
    # top_k (1, 2): only level-1 node 0 survives -> agents (0,1), (0,0);
    # without voting all three leaves with votes are kept (cap A = 3).
    voted = HiSACCompressor((2, 2), (1, 2), 3)(**_hard_case())
    np.testing.assert_array_equal(voted["group_mask"], [[1, 1, 0]])
    np.testing.assert_array_equal(voted["group_sids"].numpy()[0, :2],
                                  [[0, 1], [0, 0]])
    free = HiSACCompressor((2, 2), (1, 2), 3, use_voting=False)(
        **_hard_case())
    np.testing.assert_array_equal(free["group_mask"], [[1, 1, 1]])
    np.testing.assert_array_equal(free["group_sids"].numpy()[0],
                                  [[0, 1], [0, 0], [1, 0]])


def test_hisac_soft_prototypes_sum_codewords():
    # p_a = E^1[c_1] + E^2[c_2]: codebooks rows [E^1_0, E^1_1, E^2_0,
    # E^2_1] = [(1,0), (2,0), (0,10), (0,20)]; agent (1, 0) -> (2, 10).
    layer = HiSACCompressor((2, 2), (2, 2), 3)
    books = tf.constant([[1., 0.], [2., 0.], [0., 10.], [0., 20.]])
    protos = layer.prototypes(books, tf.constant([[[1, 0], [0, 1]]]))
    np.testing.assert_allclose(protos.numpy(), [[[2, 10], [1, 20]]])


# --- k-means and SimHash against numpy references --------------------------


def kmeans_reference(z, h, member, num_clusters, iterations):
    """Per-user Lloyd's k-means by plain loops (float64)."""
    batch, _, d = h.shape
    states = np.zeros((batch, num_clusters, d))
    counts = np.zeros((batch, num_clusters))
    for b in range(batch):
        items = np.flatnonzero(member[b])
        n = len(items)
        m = min(num_clusters, n)
        if m == 0:
            continue
        zb = z[b, items].astype(np.float64)
        centroids = np.array([zb[(j * n) // m] for j in range(m)])

        def assign():
            dist = ((zb[:, None, :] - centroids[None]) ** 2).sum(-1)
            return dist.argmin(1)  # ties: the first (smaller) index

        for _ in range(iterations):
            labels = assign()
            for j in range(m):
                if (labels == j).any():
                    centroids[j] = zb[labels == j].mean(0)
        labels = assign()
        for j in range(m):
            chosen = items[labels == j]
            counts[b, j] = len(chosen)
            if len(chosen):
                states[b, j] = h[b, chosen].mean(0)
    return states, counts


@pytest.mark.parametrize("iterations", [
    pytest.param(0, id="init-only"), pytest.param(3, id="three-steps")])
def test_kmeans_matches_numpy_reference(iterations):
    inputs = history_inputs(seed=3, batch=4, length=12)
    valid = inputs["valid"].numpy()
    valid[2, 2:] = False  # a user with n = 2 < A = 3
    inputs["valid"] = tf.constant(valid)
    member = valid & inputs["has_sid"].numpy()
    out = KMeansCompressor(3, iterations=iterations)(**inputs)
    want_states, want_counts = kmeans_reference(
        inputs["latents"].numpy(), inputs["values"].numpy(), member, 3,
        iterations)
    np.testing.assert_allclose(out["group_states"].numpy(), want_states,
                               atol=1e-5)
    mask = want_counts > 0
    np.testing.assert_array_equal(out["group_mask"].numpy(), mask)
    n = want_counts.sum(1, keepdims=True)
    want_prior = np.where(mask, np.log(np.where(mask, want_counts, 1)
                                       / np.maximum(n, 1)), 0)
    np.testing.assert_allclose(out["group_prior"].numpy(), want_prior,
                               atol=1e-6)
    assert int(out["num_active"][2]) == 2


def test_lsh_matches_numpy_reference():
    inputs = history_inputs(seed=5, batch=3, length=16)
    layer = LSHCompressor(3, num_bits=3, latent_dim=DS, seed=7)
    out = layer(**inputs)
    z = inputs["latents"].numpy()
    h = inputs["values"].numpy()
    member = inputs["valid"].numpy() & inputs["has_sid"].numpy()
    codes = ((z @ layer.hyperplanes) > 0) @ (2 ** np.arange(3))
    for b in range(3):
        counts = np.bincount(codes[b][member[b]], minlength=8)
        order = np.argsort(-counts, kind="stable")[:3]
        for slot, code in enumerate(order):
            chosen = member[b] & (codes[b] == code)
            assert bool(out["group_mask"][b, slot]) == (counts[code] > 0)
            if counts[code]:
                np.testing.assert_allclose(
                    out["group_states"].numpy()[b, slot],
                    h[b][chosen].mean(0), atol=1e-6)
                np.testing.assert_allclose(
                    float(out["group_prior"][b, slot]),
                    math.log(counts[code] / counts[order].sum()),
                    atol=1e-6)


# --- sim_hard: the candidate-side category mask ----------------------------


def test_category_mask_golden():
    # Items' categories (3, 5, 3, 0-padding); candidates 3, 5, 7, 0.
    mask = category_mask(
        tf.constant([[3, 5, 3, 0]]),
        tf.constant(np.array([[1, 1, 1, 0]], bool)),
        tf.constant([[3, 5, 7, 0]]))
    np.testing.assert_array_equal(mask.numpy()[0], [
        [1, 0, 1, 0],  # category 3: items 0 and 2
        [0, 1, 0, 0],  # category 5: item 1
        [0, 0, 0, 0],  # category 7: none in the history
        [0, 0, 0, 0],  # unknown category 0 matches nothing
    ])


def test_category_masked_attention_against_plain_attention():
    rng = np.random.default_rng(0)
    attention = AgentTargetAttention(num_heads=2, key_dim=2, output_dim=3)
    states = tf.constant(rng.normal(size=(2, 4, 5)).astype(np.float32))
    mask = tf.constant(np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool))
    state = attention.encode(states, tf.ones([2, 4]), mask)
    queries = tf.constant(rng.normal(size=(2, 3, 6)).astype(np.float32))
    plain = attention.score(state, queries).numpy()
    # Every item and candidate in category 4: the mask changes nothing.
    state["group_categories"] = tf.fill([2, 4], 4)
    same = category_masked_attention(
        attention, state, queries, tf.fill([2, 3], 4)).numpy()
    np.testing.assert_allclose(same, plain, atol=1e-6)
    # A candidate of an absent category attends to nothing: the output is
    # the output projection's bias; another sees only item 1 (category 9).
    state["group_categories"] = tf.constant([[4, 9, 4, 9], [4, 4, 4, 4]])
    cands = tf.constant([[8, 9, 4], [4, 4, 8]])
    got = category_masked_attention(attention, state, queries, cands)
    bias = attention.output_dense.bias.numpy()
    np.testing.assert_allclose(got.numpy()[0, 0], bias, atol=1e-6)
    np.testing.assert_allclose(got.numpy()[1, 2], bias, atol=1e-6)
    only = {**state, "mask": tf.constant(
        np.array([[0, 1, 0, 0], [1, 1, 0, 0]], bool))}
    only["bias"] = tf.where(only["mask"], 0.0, tf.float32.min)
    want = attention.score(only, queries).numpy()
    np.testing.assert_allclose(got.numpy()[0, 1], want[0, 1], atol=1e-6)


def test_sim_hard_state_and_missing_categories():
    cfg = config_lib.load_config("tiny", ['model.compressor="sim_hard"'])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    state = model.compress_user(batch)
    assert "group_categories" in model.state_keys
    np.testing.assert_array_equal(
        state["group_categories"].numpy(),
        np.where(state["mask"].numpy(),
                 batch["hist_category_ids"].numpy(), 0))
    np.testing.assert_allclose(model.score(state, batch).numpy(),
                               model(batch).numpy(), atol=1e-6)
    cached = {k: state[k] for k in ("keys", "values", "bias", "mask",
                                    "user_embedding")}
    with pytest.raises(ValueError, match="group_categories"):
        model.score(cached, batch)


# --- factory, config and build errors --------------------------------------


@pytest.mark.parametrize("name, kwargs, message", [
    pytest.param("nope", {}, "unknown compressor 'nope'", id="unknown"),
    pytest.param("lsh", {"latent_dim": None}, "latent_dim",
                 id="lsh-no-latent-dim"),
    pytest.param("full", {"max_history": None}, "max_history",
                 id="full-no-length"),
    pytest.param("lsh", {"lsh_bits": 1}, "num_bits", id="lsh-too-few-bits"),
    pytest.param("kmeans", {"kmeans_iterations": -1}, "iterations",
                 id="kmeans-negative"),
    pytest.param("patching", {"num_groups": 0}, "num_groups",
                 id="zero-groups"),
])
def test_factory_errors_name_the_field(name, kwargs, message):
    args = dict(num_groups=A, codebook_sizes=SIZES, top_k=(2, 2),
                latent_dim=DS, max_history=N)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_compressor(name, **args)


def test_compressor_needs_its_inputs():
    with pytest.raises(ValueError, match="needs `latents`"):
        KMeansCompressor(2)(tf.zeros([1, 3, 2]), valid=tf.ones([1, 3]),
                            has_sid=tf.ones([1, 3], tf.bool))
    with pytest.raises(ValueError, match="needs `categories`"):
        SimHardCompressor(3)(tf.zeros([1, 3, 2]), valid=tf.ones([1, 3]),
                             sids=tf.zeros([1, 3, 2], tf.int32),
                             has_sid=tf.ones([1, 3], tf.bool))


@pytest.mark.parametrize("override, message", [
    pytest.param('model.compressor="nope"', "model.compressor 'nope'",
                 id="unknown-compressor"),
])
def test_build_model_rejects_unknown_compressor(override, message):
    cfg = config_lib.load_config("tiny", [override])
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, SPEC, random_tables())


@pytest.mark.parametrize("override, message", [
    pytest.param("model.lsh_bits=1", "model.lsh_bits", id="lsh-bits"),
    pytest.param("model.kmeans_iterations=-2", "model.kmeans_iterations",
                 id="kmeans-iterations"),
])
def test_config_validates_compressor_fields(override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load_config("tiny", [override])


def test_every_name_builds_through_the_config():
    for name in COMPRESSOR_NAMES:
        layer = factory(name)()
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


# --- FLOPs -------------------------------------------------------------------


def test_flops_hand_count_hisac():
    # N = 6, A = 2, C = 3, D = 4, Ds = 2, H = 2 (dk = 2, hk = 4), L = 2,
    # U = 2 user features, MLP (8,), cross layer.
    # Compression: prototypes (L-1) A Ds = 4; norms N Ds + A Ds = 12 + 4;
    #   z.p A N Ds = 24; states A N D = 48 -> 92.
    # User side: history embedding 3 N D = 72; + 92; group SID embedding
    #   (L-1) G D = 8; keys and values 2 G (2D) hk = 2*2*8*4 = 128 -> 300.
    # Per candidate: SID embedding 4; query 3D hk = 48; logits + sum
    #   2 G hk = 16; output hk D = 16; head F = 3*4 + 12 + 4 = 28:
    #   cross 28*28 + 28 = 812, MLP 28*8 = 224, logit 8 -> 1128.
    # Request: 300 + 3 * 1128 = 3684.
    got = flops_lib.request_flops(flops_lib.RequestSizes(
        "hisac", n=6, a=2, c=3, d=4, ds=2, h=2, num_levels=2,
        user_features=2, mlp_dims=(8,), use_cross_layer=True,
        attention_mass=False))
    assert got == {"groups": 2, "compression": 92, "user": 300,
                   "per_candidate": 1128, "request": 3684}
    # Attention mass: + (H + 1) D = 3 * 4 = 12 per candidate -> 1140;
    #   request 300 + 3 * 1140 = 3720.
    mass = flops_lib.request_flops(flops_lib.RequestSizes(
        "hisac", n=6, a=2, c=3, d=4, ds=2, h=2, num_levels=2,
        user_features=2, mlp_dims=(8,), use_cross_layer=True,
        attention_mass=True))
    assert (mass["per_candidate"], mass["request"]) == (1140, 3720)


def test_flops_hand_count_full_and_kmeans():
    # full: G = N = 6, no compression. User: 72 + (L-1) G D = 24 + keys
    #   and values 2*6*8*4 = 384 -> 480. Per candidate: 4 + 48 + 2*6*4 =
    #   48 + 16 + 1044 (head) = 1160. Request 480 + 3 * 1160 = 3960.
    full = flops_lib.request_flops(flops_lib.RequestSizes(
        "full", n=6, a=2, c=3, d=4, ds=2, h=2, mlp_dims=(8,),
        attention_mass=False))
    assert (full["user"], full["per_candidate"], full["request"]) == (
        480, 1160, 3960)
    # kmeans, I = 1: N Ds = 12; 2 assignments of A Ds + A N Ds = 4 + 24;
    #   1 update N Ds = 12; means N D = 24 -> 12 + 56 + 12 + 24 = 104.
    assert flops_lib.compression_cost("kmeans", CompressorSizes(
        n=6, a=2, d=4, ds=2, h=2, kmeans_iterations=1)).macs == 104


def test_flops_dense_terms_match_the_built_model():
    """Projection and head MACs = kernel sizes of the model's layers."""
    cfg = config_lib.load_config(
        "tiny", ["model.short_term_length=0", "model.count_slots=0"])
    model = build_model(cfg, SPEC, random_tables())
    model(random_batch())
    m, g = cfg.model, cfg.model.num_agents
    kernels = {
        name: int(np.prod(layer.kernel.shape))
        for name, layer in (("query", model.attention.query_dense),
                            ("key", model.attention.key_dense),
                            ("value", model.attention.value_dense),
                            ("output", model.attention.output_dense),
                            ("mass", model.attention.mass_dense))
    }
    head = sum(int(np.prod(d.kernel.shape)) for d in model.mlp)
    head += int(np.prod(model.logit.kernel.shape))
    cross = int(np.prod(model.cross._dense.kernel.shape))
    width = model.cross._dense.kernel.shape[0]
    got = flops_lib.config_flops(cfg)
    d, hk = m.embedding_dim, m.embedding_dim
    n, levels = cfg.data.max_history, len(cfg.tokenizer.codebook_sizes)
    # Per candidate minus the SID embedding and attention arithmetic.
    assert got["per_candidate"] - (levels - 1) * d - 2 * g * hk == (
        kernels["query"] + kernels["output"] + kernels["mass"] + cross
        + width + head)
    # User side minus embedding sums and compression = G x (K + V).
    assert got["user"] - 3 * n * d - got["compression"] - (
        levels - 1) * g * d == g * (kernels["key"] + kernels["value"])


def test_flops_two_branch_head_and_short_branch_match_the_model():
    """With a short-term branch and match counts, the head's cross kernel
    is F x F with F as counted, and the short branch adds its own
    projections per candidate."""
    cfg = config_lib.load_config(
        "tiny", ["model.short_term_length=4", "model.count_slots=8"])
    model = build_model(cfg, SPEC, random_tables())
    model(random_batch())
    got = flops_lib.config_flops(cfg)
    one = flops_lib.config_flops(cfg.replace(model={
        "short_term_length": 0, "count_slots": 0}))
    width = model.cross._dense.kernel.shape[0]
    m = cfg.model
    base_width = (1 + len(cfg.data.user_features)) * m.embedding_dim + (
        4 * m.embedding_dim)
    levels = len(cfg.tokenizer.codebook_sizes)
    assert width == base_width + m.embedding_dim + 4 * (1 + levels) + 1
    short = model.short_attention
    short_kernels = sum(int(np.prod(k.kernel.shape)) for k in (
        short.query_dense, short.output_dense, short.mass_dense))
    head_delta = (width * width + width) - (
        base_width * base_width + base_width) + (
        width - base_width) * m.mlp_dims[0]
    assert got["per_candidate"] - one["per_candidate"] == (
        short_kernels + 2 * 4 * m.embedding_dim + head_delta)
