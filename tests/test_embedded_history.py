"""`EmbeddedHistory` and the routed-only embedding (issue 23): per-item
fields are computed on first read, `at`/`newest` embed only the chosen
positions with the same h as the whole history, and with a sparse
routing plan the training step embeds only the routed items."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.compressors.hisac_compressor import routed_positions
from hisac_tf.data.feature_spec import HISTORY_FEATURES, FeatureSpec
from hisac_tf.models.branch import encode_groups
from hisac_tf.models.build import build_model
from hisac_tf.models.embedded_history import EmbeddedHistory
from hisac_tf.models.routing_plan import add_routing_plan
from tests.test_hisac_ranker import random_batch, random_tables


def _model(*override):
    cfg = config_lib.load_config("tiny", list(override))
    return build_model(cfg, FeatureSpec.from_config(cfg.data),
                       random_tables())


def test_fields_are_computed_on_first_read_only():
    model = _model()
    calls = []

    def embed(features, valid):
        calls.append(int(features["hist_item_ids"].shape[1]))
        return model._embed_items(features, valid)

    batch = random_batch()
    history = model.embed_history(batch)
    lazy = EmbeddedHistory(batch, history["valid"], HISTORY_FEATURES,
                           embed, model.semantic_lookup,
                           {"request_time": batch["request_time"]})
    assert lazy["valid"].shape == (3, 20) and calls == []
    lazy["sids"], lazy["timestamps"]
    assert calls == []
    np.testing.assert_array_equal(lazy["h"], history["h"])
    lazy["h"]
    assert calls == [20]  # once, all N items
    with pytest.raises(KeyError):
        lazy["nothing"]
    with pytest.raises(ValueError, match="h"):
        EmbeddedHistory(batch, history["valid"], HISTORY_FEATURES, embed,
                        model.semantic_lookup, {"h": 1})
    with pytest.raises(ValueError, match="hist_brand"):
        EmbeddedHistory(batch, history["valid"], ("hist_brand",), embed,
                        model.semantic_lookup, {})


def test_at_leaves_per_request_features_alone():
    """hist_raw_length [B] (the input pipeline's) is per request, not
    per item: `at` gathers only the per-item inputs."""
    model = _model()
    batch = dict(random_batch(), hist_raw_length=tf.constant([8, 16, 0]))
    history = model.embed_history(batch)
    part = history.at(tf.zeros([3, 2], tf.int32))
    assert part["h"].shape[:2] == (3, 2)


def test_at_embeds_the_same_h_as_the_whole_history():
    model = _model()
    batch = random_batch()
    history = model.embed_history(batch)
    positions = tf.constant([[0, 3, 7], [19, 2, 2], [0, 1, 5]])  # [B, K]
    mask = tf.constant([[True, True, False]] * 3)
    part = history.at(positions, mask)
    want_h = tf.gather(history["h"], positions, batch_dims=1)
    np.testing.assert_allclose(part["h"], want_h, atol=1e-6)
    for key in ("sids", "latents", "has_sid", "timestamps", "categories"):
        np.testing.assert_array_equal(
            part[key], tf.gather(history[key], positions, batch_dims=1))
    want_valid = tf.logical_and(
        tf.gather(history["valid"], positions, batch_dims=1), mask)
    np.testing.assert_array_equal(part["valid"], want_valid)
    assert part["codebooks"] is history["codebooks"]
    with pytest.raises(ValueError, match="positions"):
        history.at(tf.zeros([3], tf.int32))


def test_newest_is_the_newest_window_oldest_first():
    model = _model()
    batch = random_batch()  # lengths (8, 16, 0) of N = 20
    history = model.embed_history(batch)
    lengths = batch["hist_length"].numpy()
    window = history.newest(10)
    valid = window["valid"].numpy()
    h = window["h"].numpy()
    full = history["h"].numpy()
    for row, n in enumerate(lengths):
        kept = min(n, 10)
        assert valid[row].sum() == kept
        # the last `kept` slots hold positions n - kept .. n - 1
        np.testing.assert_allclose(h[row, 10 - kept:], full[row, n - kept:n],
                                   atol=1e-6)


def test_short_term_branch_equals_recent_over_the_whole_history():
    """Embedding the window only gives the old result: the newest S of
    the embedded whole history."""
    model = _model("model.short_term_length=5")
    batch = random_batch()
    state = model.compress_user(batch)
    branch = next(b for b in model.branches
                  if type(b).__name__ == "ShortTermBranch")
    history = model.embed_history(batch)
    recent = branch.recent(history["h"], valid=history["valid"],
                           sids=history["sids"], has_sid=history["has_sid"])
    want = encode_groups(recent, branch.attention, history["sid_embedding"])
    for key in ("keys", "values", "mask"):
        np.testing.assert_allclose(state["short_" + key], want[key],
                                   atol=1e-5)


def test_routed_positions_index_the_routed_items():
    rng = np.random.default_rng(0)
    n = 30
    index = rng.integers(0, n, (4, 5, 6))  # [B, A, K]
    weights = rng.random((4, 5, 6)) * (rng.random((4, 5, 6)) > 0.3)
    weights[3] = 0.0  # a row with nothing routed
    got = {k: v.numpy() for k, v in routed_positions(
        tf.constant(index), tf.constant(weights), n).items()}
    positions, mask = got["routing_positions"], got["routing_position_mask"]
    slots = got["routing_slots"]
    for b in range(4):
        want = sorted(set(index[b][weights[b] > 0].tolist()))
        assert positions[b][mask[b]].tolist() == want
        assert len(set(positions[b].tolist())) == positions.shape[1]
        kept = weights[b] > 0
        np.testing.assert_array_equal(
            positions[b][slots[b]][kept], index[b][kept])
        assert (slots[b][~kept] == 0).all()
    assert positions.shape[1] == max(
        len(set(index[b][weights[b] > 0].tolist())) for b in range(4))
    assert mask[3].sum() == 0 and positions.shape[1] >= 1


def test_step_with_a_sparse_plan_reads_only_the_routed_items():
    """With the plan, items no agent routes are never embedded: changing
    them changes neither the loss nor the gradients, and the item
    table's gradient has B (U + C) rows (U < N here), not B (N + C)."""
    model = _model("model.routing_top_m=2", "model.count_slots=0",
                   "model.short_term_length=0")
    batch = random_batch()
    planned = add_routing_plan(model)(batch)
    mask = planned["routing_position_mask"].numpy()
    positions = planned["routing_positions"].numpy()
    n = batch["hist_item_ids"].shape[1]
    assert positions.shape[1] < n
    routed = np.zeros((3, n), bool)
    for b in range(3):
        routed[b, positions[b][mask[b]]] = True
    changed = dict(planned)
    for key in ("hist_item_ids", "hist_category_ids", "hist_behaviors"):
        value = batch[key].numpy()
        changed[key] = tf.constant(np.where(routed, value, 1))
    np.testing.assert_allclose(model(planned), model(changed), atol=1e-6)
    table = model.ranking_embedding.item_table.embeddings
    grads = []
    for features in (planned, changed):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(features, training=True)
        grads.append(tape.gradient(loss, table))
    np.testing.assert_allclose(tf.convert_to_tensor(grads[0]),
                               tf.convert_to_tensor(grads[1]), atol=1e-6)
    assert isinstance(grads[0], tf.IndexedSlices)
    # rows: B U routed items + B C candidates (the whole history: B N)
    c = batch["cand_item_ids"].shape[1]
    assert grads[0].indices.shape[0] == 3 * (positions.shape[1] + c)


@pytest.mark.parametrize("override", [
    pytest.param([], id="two_branch"),
    pytest.param(["model.routing_top_m=3"], id="two_branch_sparse"),
    pytest.param(['model.compressor="none"'], id="short_only"),
])
def test_a_width_zero_history_scores(override):
    """[B, 0] histories (cold-start users, no padding column) give
    finite logits: the newest-S window and the routed positions read a
    padding item instead of gathering from nothing."""
    model = _model(*override)
    batch = random_batch()
    for key in HISTORY_FEATURES:
        batch[key] = tf.zeros([3, 0], batch[key].dtype)
    batch["hist_length"] = tf.zeros([3], tf.int32)
    logits = model(batch)
    assert logits.shape == (3, 6) and np.isfinite(logits.numpy()).all()


def test_sparse_routing_without_a_plan_embeds_only_the_routed_items():
    """A request (or a step without the pipeline's plan) routes first
    and embeds only the routed items too: the item table's gradient has
    B (U + C) rows, the same U as the pipeline's plan, not B (N + C)."""
    model = _model("model.routing_top_m=2", "model.count_slots=0",
                   "model.short_term_length=0")
    batch = random_batch()
    width = add_routing_plan(model)(batch)["routing_positions"].shape[1]
    assert width < batch["hist_item_ids"].shape[1]
    model(batch)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grad = tape.gradient(loss, model.ranking_embedding.item_table.embeddings)
    c = batch["cand_item_ids"].shape[1]
    assert grad.indices.shape[0] == 3 * (width + c)
