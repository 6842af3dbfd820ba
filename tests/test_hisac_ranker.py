"""HiSACRanker: shapes, request-level caching, gradients, build errors."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.models.long_term_branch import LongTermBranch
from hisac_tf.models.match_counts_branch import MatchCountsBranch
from hisac_tf.models.short_term_branch import ShortTermBranch
from tests.layer_harness import check_config_round_trip
from hisac_tf.tokenizer.semantic_tables import SemanticTables

CFG = config_lib.load_config("tiny")
SPEC = FeatureSpec.from_config(CFG.data)


def random_tables(num_items=60, sizes=(4, 4), dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return SemanticTables(
        item_ids=np.arange(1, num_items + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, num_items) for k in sizes], 1)
        .astype(np.int32),
        latents=rng.normal(size=(num_items, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes),
    )


def random_batch(b=3, n=20, c=6, seed=0, empty_user=True):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, n + 1, b)
    if empty_user:
        lengths[-1] = 0
    valid = np.arange(n)[None] < lengths[:, None]
    counts = rng.integers(1, c + 1, b)
    cvalid = np.arange(c)[None] < counts[:, None]
    ids = lambda hi, shape, m: np.where(m, rng.integers(1, hi, shape), 0)  # noqa
    return {
        "user_id": tf.constant(rng.integers(1, 100, b)),
        "request_time": tf.constant(np.full(b, 10_000, np.int64)),
        "gender": tf.constant(rng.integers(1, 3, b)),
        "age_bucket": tf.constant(rng.integers(1, 9, b)),
        # Ids up to 80 include OOV items (the tables hold 1..60).
        "hist_item_ids": tf.constant(ids(80, (b, n), valid)),
        "hist_category_ids": tf.constant(ids(5, (b, n), valid)),
        "hist_behaviors": tf.constant(ids(5, (b, n), valid)),
        "hist_timestamps": tf.constant(
            np.where(valid, np.sort(rng.integers(1, 9_000, (b, n))), 0)),
        "hist_length": tf.constant(lengths.astype(np.int32)),
        "cand_item_ids": tf.constant(ids(80, (b, c), cvalid)),
        "cand_category_ids": tf.constant(ids(5, (b, c), cvalid)),
        "cand_count": tf.constant(counts.astype(np.int32)),
        "labels": tf.constant(
            np.where(cvalid, rng.integers(0, 2, (b, c)), 0).astype(np.float32)
        ),
    }


def test_forward_shapes_finite_with_empty_history():
    model = build_model(CFG, SPEC, random_tables())
    logits = model(random_batch())
    assert logits.shape == (3, 6)
    assert np.all(np.isfinite(logits.numpy()))
    state = model.compress_user(random_batch())
    assert int(state["num_active"][-1]) == 0  # the empty history
    assert state["keys"].shape[2] == CFG.model.num_agents


def test_call_equals_cached_state_scoring():
    model = build_model(CFG, SPEC, random_tables())
    batch = random_batch()
    state = model.compress_user(batch)
    np.testing.assert_allclose(
        model(batch).numpy(), model.score(state, batch).numpy(), atol=1e-6)
    # The same cached state scores any other candidates of the same users.
    other = dict(batch, cand_item_ids=batch["cand_item_ids"][:, ::-1])
    np.testing.assert_allclose(
        model(other).numpy(), model.score(state, other).numpy(), atol=1e-6)


def test_gradients_reach_ranking_embeddings_not_semantic_tables():
    tables = random_tables()
    model = build_model(CFG, SPEC, tables)
    optimizer = build_optimizer(CFG, model)
    batch = random_batch()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    named = {v.name: g for v, g in zip(model.trainable_variables, grads)}
    item_grads = [g for name, g in named.items() if "item_embedding" in name]
    assert item_grads and all(g is not None for g in item_grads)
    assert not model.semantic_lookup.trainable_weights
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    np.testing.assert_array_equal(
        model.semantic_lookup.latents.numpy(), tables.latents)
    np.testing.assert_array_equal(
        model.semantic_lookup.codebooks[0].numpy(), tables.codebooks[0])


def test_optimizer_split_covers_every_variable_once():
    model = build_model(CFG, SPEC, random_tables())
    model(random_batch())
    emb = {id(v) for v in model.embedding_variables()}
    dense = {id(v) for v in model.dense_variables()}
    assert emb and dense and not emb & dense
    assert emb | dense == {id(v) for v in model.trainable_variables}


def test_loss_counts_valid_candidates_only():
    model = build_model(CFG, SPEC, random_tables())
    batch = random_batch()
    loss = float(model.compute_loss(batch))
    # Changing labels of padded candidates must not change the loss.
    padded = np.arange(6)[None] >= batch["cand_count"].numpy()[:, None]
    flipped = dict(batch, labels=tf.where(padded, 1.0, batch["labels"]))
    assert float(model.compute_loss(flipped)) == pytest.approx(loss)


@pytest.mark.parametrize(
    "override, tables_kw, message",
    [
        pytest.param([], {"sizes": (4, 8)}, "tokenizer.codebook_sizes",
                     id="codebook-mismatch"),
        pytest.param([], {"dim": 4}, "tokenizer.latent_dim",
                     id="latent-mismatch"),
        pytest.param(["model.compressor=\"nope\""], {}, "model.compressor",
                     id="unsupported-compressor"),
    ],
)
def test_build_errors_name_field(override, tables_kw, message):
    cfg = config_lib.load_config("tiny", override)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, SPEC, random_tables(**tables_kw))


def test_hard_routing_variant_builds_and_scores():
    cfg = config_lib.load_config("tiny", ['model.compressor="hisac_hard"'])
    model = build_model(cfg, SPEC, random_tables())
    assert np.all(np.isfinite(model(random_batch()).numpy()))


@pytest.mark.parametrize("mass", [
    pytest.param(True, id="attention_mass"),
    pytest.param(False, id="plain_softmax"),
])
def test_attention_mass_switch(mass):
    """model.attention_mass reaches the target attention; both variants
    score finitely (empty history included) and cache the same way."""
    cfg = config_lib.load_config(
        "tiny", [f"model.attention_mass={str(mass).lower()}"])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    logits = model(batch)
    assert model.attention.attention_mass is mass
    assert (model.attention.mass_dense is not None) is mass
    assert np.all(np.isfinite(logits.numpy()))
    np.testing.assert_allclose(
        logits.numpy(), model.score(model.compress_user(batch), batch),
        atol=1e-6)
    # The mass weights get gradient through the loss.
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch)
    if mass:
        grad = tape.gradient(loss, model.attention.mass_dense.kernel)
        assert grad is not None and np.any(grad.numpy() != 0)


BRANCHES = [
    pytest.param(["model.short_term_length=4", "model.count_slots=8"],
                 id="two_branch_hisac_counts"),
    pytest.param(["model.short_term_length=4", "model.count_slots=0"],
                 id="two_branch_no_counts"),
    pytest.param(["model.short_term_length=0", "model.count_slots=8"],
                 id="long_only"),
    pytest.param(["model.short_term_length=0", "model.count_slots=0"],
                 id="long_only_no_counts"),
    pytest.param(['model.compressor="none"', "model.short_term_length=4"],
                 id="short_only"),
    pytest.param(['model.compressor="none"', "model.short_term_length=4",
                  "model.count_slots=0"],
                 id="short_only_no_counts"),
    pytest.param(['model.compressor="full"', "model.short_term_length=4"],
                 id="two_branch_full"),
    pytest.param(['model.compressor="sim_hard"', "model.short_term_length=4"],
                 id="two_branch_sim_hard"),
    pytest.param(['model.compressor="kmeans"', "model.short_term_length=4"],
                 id="two_branch_kmeans"),
    # Sparse routing: the long-term branch routes first and embeds only
    # the routed items (models/embedded_history.py).
    pytest.param(["model.short_term_length=4", "model.routing_top_m=3"],
                 id="two_branch_sparse"),
]


@pytest.mark.parametrize("override", BRANCHES)
def test_branches_score_finite_and_cache(override):
    cfg = config_lib.load_config("tiny", override)
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    logits = model(batch)
    assert logits.shape == (3, 6)
    assert np.all(np.isfinite(logits.numpy()))
    state = model.compress_user(batch)
    assert set(model.state_keys) <= set(state)
    spec = model.state_spec()
    assert tuple(spec) == model.state_keys
    for name, want in spec.items():  # state_spec describes the state
        got = state[name]
        assert want.shape.is_compatible_with(got.shape), (name, got.shape)
        assert (got.dtype == want.dtype or
                got.dtype.is_floating and want.dtype.is_floating), name
    # The cache as it travels (float32, as score_with_state gets it):
    cached = {k: (tf.cast(state[k], tf.float32)
                  if state[k].dtype.is_floating else state[k])
              for k in model.state_keys}
    np.testing.assert_allclose(
        logits.numpy(), model.score(cached, batch).numpy(), atol=1e-5)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads), [
        v.name for v, g in zip(model.trainable_variables, grads) if g is None]


def test_state_keys_follow_the_branches():
    def keys(*override):
        cfg = config_lib.load_config("tiny", list(override))
        return build_model(cfg, SPEC, random_tables()).state_keys

    two = keys("model.short_term_length=4", "model.count_slots=8")
    assert two[:4] == ("keys", "values", "bias", "mask")
    assert "short_keys" in two and "count_keys" in two
    assert two[-1] == "user_embedding"
    short = keys('model.compressor="none"', "model.short_term_length=4",
                 "model.count_slots=0")
    assert short == ("short_keys", "short_values", "short_bias",
                     "short_mask", "user_embedding")


def test_short_only_counts_only_the_recent_window():
    """Without a long-term branch the counts see the newest S items."""
    cfg = config_lib.load_config(
        "tiny", ['model.compressor="none"', "model.short_term_length=3",
                 "model.count_slots=64"])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch(empty_user=False)
    state = model.compress_user(batch)
    lengths = state["count_lengths"].numpy()[:, 0]
    np.testing.assert_array_equal(
        lengths, np.minimum(batch["hist_length"].numpy(), 3))


def test_count_features_see_lifetime_counts():
    """Two users whose newest items agree but whose older histories hold
    the candidate's category 1 vs 15 times get different count features:
    the head can tell a lifetime interest the softmax cannot."""
    cfg = config_lib.load_config("tiny", ["model.count_slots=8"])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch(b=2, n=20, c=2, empty_user=False)
    cats = np.full((2, 20), 2)
    cats[0, :15] = 4  # user 0: fifteen old behaviours in category 4
    cats[1, 14] = 4   # user 1: one
    batch = dict(batch, hist_category_ids=tf.constant(cats),
                 hist_length=tf.constant([20, 20], tf.int32),
                 cand_category_ids=tf.constant([[4, 4], [4, 4]]))
    state = model.compress_user(batch)
    counts = [b for b in model.branches
              if isinstance(b, MatchCountsBranch)][0]
    candidates = {"categories": batch["cand_category_ids"],
                  "sids": tf.zeros([2, 2, 2], tf.int32),
                  "has_sid": tf.zeros([2, 2], tf.bool)}
    feats = counts.score(counts.local_state(state), candidates).numpy()
    # type 0 = category: log1p(count) is the first of its 4 features
    np.testing.assert_allclose(feats[:, 0, 0], np.log1p([15, 1]), rtol=1e-6)


@pytest.mark.parametrize("override", [
    pytest.param([], id="default"),
    pytest.param(['model.compressor="none"', "model.short_term_length=4"],
                 id="short_only"),
])
def test_get_config_round_trip(override):
    cfg = config_lib.load_config("tiny", override)
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    model(batch)
    config = model.get_config()
    clone = type(model).from_config(config)
    clone(batch)
    assert clone.get_config() == config
    assert clone.state_keys == model.state_keys
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch).numpy(), model(batch).numpy(),
                               atol=1e-5)


def test_short_only_needs_a_window():
    with pytest.raises(ConfigError, match="short_term_length"):
        config_lib.load_config(
            "tiny", ['model.compressor="none"', "model.short_term_length=0"])


@pytest.mark.parametrize("compressor, reports", [
    pytest.param("hisac", True, id="hisac"),
    pytest.param("hisac_hard", True, id="hisac_hard"),
    pytest.param("full", False, id="full"),
])
def test_routing_diagnostics_on_request(compressor, reports):
    cfg = config_lib.load_config(
        "tiny", [f'model.compressor="{compressor}"'])
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch()
    plain = model.compress_user(batch)
    assert "effective_items_per_agent" not in plain
    out = model.compress_user(batch, diagnostics=True)
    keys = ("effective_items_per_agent", "off_sid_mass", "agents_per_user")
    assert all((k in out) is reports for k in keys)
    if reports:
        np.testing.assert_array_equal(
            out["agents_per_user"].numpy(),
            out["num_active"].numpy().astype(np.float32))
        eff = out["effective_items_per_agent"].numpy()
        assert eff[-1] == 0.0 and np.all(eff[:-1] >= 1.0)  # empty user
        if compressor == "hisac_hard":  # hard routing stays in its SID
            np.testing.assert_allclose(out["off_sid_mass"], 0.0, atol=1e-6)


def test_branches_config_round_trip():
    cfg = config_lib.load_config(
        "tiny", ["model.short_term_length=4", "model.count_slots=8"])
    model = build_model(cfg, SPEC, random_tables())
    kinds = [type(b) for b in model.branches]
    assert kinds == [LongTermBranch, ShortTermBranch, MatchCountsBranch]
    for branch in model.branches:
        clone = check_config_round_trip(branch)
        assert clone.state_spec().keys() == branch.state_spec().keys()


def test_branch_state_names_must_be_distinct():
    cfg = config_lib.load_config("tiny", ["model.short_term_length=4"])
    model = build_model(cfg, SPEC, random_tables())
    short = ShortTermBranch(3, num_heads=2, key_dim=4, output_dim=8)
    with pytest.raises(ValueError, match="short_keys.*state_prefix"):
        HiSACRanker(model.semantic_lookup, [short, ShortTermBranch(
            2, num_heads=2, key_dim=4, output_dim=8)])
    with pytest.raises(ValueError, match="needs a history branch"):
        HiSACRanker(model.semantic_lookup, [MatchCountsBranch(4, (4, 4))])


def test_compressor_is_built_one_way():
    """The ranker takes branches; the compressor's settings are not
    ranker arguments any more (they were ignored by get_config)."""
    model = build_model(CFG, SPEC, random_tables())
    with pytest.raises(TypeError, match="num_agents"):
        HiSACRanker(model.semantic_lookup, model.branches, num_agents=3)
