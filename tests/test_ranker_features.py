"""The ranker with declared features: h_i, candidates, head, cache,
serving inputs (docs/design.md §4.1)."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.item_feature_values import ItemFeatureValues
from hisac_tf.export import signatures as sig
from hisac_tf.feature_config import FeatureConfig, default_features
from hisac_tf.models.build import build_model
from tests.test_hisac_ranker import random_batch, random_tables

NUM_ITEMS = 80  # random_batch draws item ids below 80


def declared(tmp_path):
    vocab = tmp_path / "device.txt"
    vocab.write_text("ios\nandroid\nweb\n")
    return (
        FeatureConfig("brand", "item", dtype="string", hash_buckets=16),
        FeatureConfig("tags", "item", kind="multi_categorical",
                      hash_buckets=16, max_values=2, table="tag"),
        FeatureConfig("price", "item", kind="dense",
                      transform="log1p_standardize", mean=1.0, std=0.5),
        FeatureConfig("content", "item", kind="vector", dim=3),
        FeatureConfig("hour", "context", hash_buckets=25),
        FeatureConfig("device", "user", dtype="string",
                      vocabulary_file=str(vocab)),
        FeatureConfig("spend", "user", kind="dense", transform="log1p"),
        FeatureConfig("dwell", "event", kind="dense", default=0.0),
        FeatureConfig("channel", "event", dtype="string", hash_buckets=8),
    )


def item_values(seed=0):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, NUM_ITEMS, dtype=np.int64)
    v = len(ids)
    return ItemFeatureValues(ids, {
        "brand": np.array([f"b{i % 5}".encode() for i in ids], object),
        "tags": rng.integers(0, 6, (v, 2)).astype(np.int64),
        "price": rng.uniform(0, 20, v).astype(np.float32),
        "content": rng.normal(size=(v, 3)).astype(np.float32),
    })


def feature_batch(b=3, n=20, c=6, seed=0):
    rng = np.random.default_rng(seed)
    batch = random_batch(b, n, c, seed=seed)
    valid = np.arange(n)[None] < batch["hist_length"].numpy()[:, None]
    batch.update(
        hour=tf.constant(rng.integers(0, 24, b)),
        device=tf.constant(np.array(["ios", "web", "fax"][:b], object)),
        spend=tf.constant(rng.uniform(0, 100, b).astype(np.float32)),
        hist_dwell=tf.constant(np.where(
            valid, rng.uniform(0, 60, (b, n)), 0).astype(np.float32)),
        hist_channel=tf.constant(np.where(
            valid, rng.choice(["app", "web"], (b, n)), "").astype(object)),
    )
    return batch


def make(tmp_path, overrides=(), item=True):
    cfg = config_lib.load_config("tiny", list(overrides))
    features = default_features(cfg.data.user_features) + declared(tmp_path)
    spec = FeatureSpec(max_history=20, max_candidates=6,
                        features=features)
    return build_model(cfg, spec, random_tables(),
                       item_values() if item else None)


COMBOS = [
    pytest.param(["model.short_term_length=4", "model.count_slots=8"],
                 id="two_branch_counts_sum"),
    pytest.param(["model.short_term_length=4", "model.count_slots=8",
                  'model.feature_combiner="concat"'],
                 id="two_branch_counts_concat"),
    pytest.param(['model.compressor="none"', "model.short_term_length=4",
                  "model.count_slots=0"], id="short_only_sum"),
    pytest.param(["model.short_term_length=0", "model.count_slots=0",
                  'model.feature_combiner="concat"'],
                 id="long_only_concat"),
]


@pytest.mark.parametrize("override", COMBOS)
def test_features_score_cache_and_train(tmp_path, override):
    model = make(tmp_path, override)
    batch = feature_batch()
    logits = model(batch)
    assert logits.shape == (3, 6)
    assert np.all(np.isfinite(logits.numpy()))
    state = model.compress_user(batch)
    spec = model.state_spec()
    for name, want in spec.items():
        assert want.shape.is_compatible_with(state[name].shape), name
    cached = {k: state[k] for k in model.state_keys}
    np.testing.assert_allclose(
        logits.numpy(), model.score(cached, batch).numpy(), atol=1e-5)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads), [
        v.name for v, g in zip(model.trainable_variables, grads)
        if g is None]


def test_item_features_shape_history_and_candidates_through_one_table(
        tmp_path):
    model = make(tmp_path)
    batch = feature_batch()
    tables = model.feature_embeddings.tables
    assert sorted(tables) == ["age_bucket", "brand", "channel", "device",
                              "gender", "hour", "tag"]
    base_h = model.embed_history(batch)["h"].numpy()
    base_q = model.embed_candidates(batch)["queries"].numpy()
    # A different brand for every item: history h_i and the candidate
    # embedding both move (one table, both sides).
    table = tables["brand"].embeddings
    table.assign(table + 1.0)
    h = model.embed_history(batch)["h"].numpy()
    q = model.embed_candidates(batch)["queries"].numpy()
    valid = np.arange(20)[None] < batch["hist_length"].numpy()[:, None]
    assert np.all(np.abs(h - base_h).max(-1)[valid] > 0.5)
    np.testing.assert_array_equal(h[~valid], base_h[~valid])
    cand = batch["cand_item_ids"].numpy() > 0
    assert np.all(np.abs(q - base_q).max(-1)[cand] > 0.5)
    # The head sees the user's and the context's features.
    state = model.compress_user(batch)
    assert state["user_embedding"].shape[-1] == model.state_spec()[
        "user_embedding"].shape[-1] == 8 * 5 + 1


def test_build_errors_name_the_feature(tmp_path):
    with pytest.raises(ConfigError, match="brand.*item feature values"):
        make(tmp_path, item=False)
    cfg = config_lib.load_config("tiny")
    missing = FeatureConfig("device", "user", dtype="string",
                            vocabulary_file=str(tmp_path / "nope.txt"))
    spec = FeatureSpec(max_history=20, max_candidates=6,
                        features=(missing,))
    with pytest.raises(ConfigError, match="device.*nope.txt"):
        build_model(cfg, spec, random_tables())
    with pytest.raises(ConfigError, match="feature_combiner"):
        config_lib.load_config("tiny", ['model.feature_combiner="max"'])


def test_get_config_round_trip_with_features(tmp_path):
    model = make(tmp_path)
    batch = feature_batch()
    model(batch)
    clone = type(model).from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch).numpy(), model(batch).numpy(),
                               atol=1e-5)
    # The export fingerprint hashes the item table's strings themselves.
    assert sig.weights_fingerprint(clone.variables, 1) == (
        sig.weights_fingerprint(model.variables, 1))


def test_serving_signatures_take_declared_request_features(tmp_path):
    model = make(tmp_path, ["model.short_term_length=4",
                            "model.count_slots=8"])
    batch = feature_batch()
    model(batch)
    module = sig.ServingModule(
        model, FeatureSpec(max_history=20, max_candidates=6), version=1)
    user = module.encode_user.input_signature[0]
    assert user["device"].dtype == tf.string
    assert user["hist_channel"].dtype == tf.string
    assert user["hist_channel"].shape.as_list() == [None, None]
    assert user["hour"].dtype == tf.int64
    assert user["spend"].dtype == tf.float32
    assert "brand" not in user  # item features are looked up
    request = {k: batch[k] for k in module.serving_default
               .input_signature[0]}
    probs = tf.sigmoid(model(batch)).numpy()
    valid = np.arange(6)[None] < batch["cand_count"].numpy()[:, None]
    want = np.where(valid, probs, 0.0)
    np.testing.assert_allclose(
        module.serving_default(request)["ctr"].numpy(), want, atol=1e-5)
    state = module.encode_user({k: batch[k] for k in user})
    cands = {k: batch[k] for k in sig.CANDIDATE_INPUTS}
    np.testing.assert_allclose(
        module.score_with_state({**state, **cands})["ctr"].numpy(), want,
        atol=1e-5)
    # A NaN in a dense feature without a default is refused, named.
    bad = dict(request, spend=tf.constant([1.0, np.nan, 2.0]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="spend must not be NaN"):
        module.serving_default(bad)
    # ...and one with a default is replaced by it (dwell: 0.0).
    dwell = batch["hist_dwell"].numpy().copy()
    dwell[0, 0] = np.nan
    ok = module.serving_default(dict(request, hist_dwell=tf.constant(
        dwell)))["ctr"].numpy()
    assert np.all(np.isfinite(ok))
