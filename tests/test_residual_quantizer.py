"""ResidualQuantizer and RQVAE: maths vs numpy, gradients, codebook care."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.residual_quantizer import ResidualQuantizer, kmeans
from hisac_tf.tokenizer.rqvae import RQVAE
from tests.layer_harness import check_layer


def _quantizer(books, beta=0.25, **kwargs):
    books = [np.asarray(b, np.float32) for b in books]
    q = ResidualQuantizer([b.shape[0] for b in books], books[0].shape[1],
                          beta=beta, **kwargs)
    q.build([None, books[0].shape[1]])
    for var, book in zip(q.codebooks, books):
        var.assign(book)
    return q


def _reference(z, books, beta):
    """Greedy residual argmin with direct (broadcast) distances."""
    r = np.asarray(z, np.float64)
    codes, zhat, loss, norms = [], np.zeros_like(r), 0.0, []
    for book in books:
        d = ((r[:, None, :] - book[None].astype(np.float64)) ** 2).sum(-1)
        c = d.argmin(axis=1)
        e = book[c].astype(np.float64)
        loss += (1 + beta) * ((r - e) ** 2).sum(-1).mean()
        r = r - e
        zhat += e
        codes.append(c)
        norms.append(np.linalg.norm(r, axis=-1))
    return np.stack(codes, 1), zhat, loss, np.stack(norms, 1)


# Hand case: E1 = {(0,0), (4,0)}, E2 = {(0,1), (0,-1)}.
# z1 = (3.5, .5): c1 = 1 (d .5 vs 12.5), r1 = (-.5, .5), c2 = 0
#   (d .5 vs 2.5), r2 = (-.5, -.5), zhat = (4, 1).
# z2 = (.2, -2): c1 = 0 (4.04 vs 18.44), r1 = (.2, -2), c2 = 1
#   (1.04 vs 9.04), r2 = (.2, -1), zhat = (0, -1).
# loss = 1.25 * mean(.5 + .5, 4.04 + 1.04) = 1.25 * 3.04 = 3.8.
HAND_BOOKS = [[[0, 0], [4, 0]], [[0, 1], [0, -1]]]
HAND_Z = [[3.5, 0.5], [0.2, -2.0]]


def test_hand_computed_case():
    q = _quantizer(HAND_BOOKS)
    out = q(tf.constant(HAND_Z))
    np.testing.assert_array_equal(out["codes"].numpy(), [[1, 0], [0, 1]])
    assert out["codes"].dtype == tf.int32
    np.testing.assert_allclose(out["zhat"].numpy(), [[4, 1], [0, -1]])
    np.testing.assert_allclose(out["quantized"].numpy(), [[4, 1], [0, -1]],
                               atol=1e-6)
    np.testing.assert_allclose(float(out["commitment_loss"]), 3.8,
                               rtol=1e-6)
    np.testing.assert_allclose(
        out["residual_norms"].numpy(),
        np.sqrt([[0.5, 0.5], [4.04, 1.04]]), rtol=1e-6)


@pytest.mark.parametrize("beta", [
    pytest.param(0.25, id="beta_0.25"),
    pytest.param(0.0, id="beta_0"),
    pytest.param(1.5, id="beta_1.5"),
])
def test_matches_numpy_reference(beta):
    rng = np.random.default_rng(1)
    books = [rng.normal(size=(k, 6)).astype(np.float32) * s
             for k, s in ((8, 2.0), (5, 1.0), (4, 0.5))]
    z = rng.normal(size=(64, 6)).astype(np.float32) * 2
    q = _quantizer(books, beta)
    out = q(tf.constant(z))
    codes, zhat, loss, norms = _reference(z, books, beta)
    np.testing.assert_array_equal(out["codes"].numpy(), codes)
    np.testing.assert_allclose(out["zhat"].numpy(), zhat, atol=1e-5)
    np.testing.assert_allclose(out["quantized"].numpy(), zhat, atol=1e-5)
    np.testing.assert_allclose(float(out["commitment_loss"]), loss,
                               rtol=1e-5)
    np.testing.assert_allclose(out["residual_norms"].numpy(), norms,
                               rtol=1e-4, atol=1e-5)
    got_codes, got_zhat = q.quantize(tf.constant(z))
    np.testing.assert_array_equal(got_codes.numpy(), codes)
    np.testing.assert_allclose(got_zhat.numpy(), zhat, atol=1e-5)


def test_ties_take_the_smaller_code():
    q = _quantizer([[[1, 0], [1, 0], [-1, 0]]])
    codes = q(tf.constant([[2.0, 0.0], [-3.0, 0.0]]))["codes"].numpy()
    np.testing.assert_array_equal(codes[:, 0], [0, 2])


def test_gradients_match_numpy():
    rng = np.random.default_rng(2)
    books = [rng.normal(size=(4, 3)).astype(np.float32),
             rng.normal(size=(3, 3)).astype(np.float32) * 0.5]
    z = tf.Variable(rng.normal(size=(16, 3)).astype(np.float32))
    beta = 0.25
    q = _quantizer(books, beta)
    with tf.GradientTape(persistent=True) as tape:
        out = q(z)
        loss = out["commitment_loss"]
        st = tf.reduce_sum(out["quantized"] * tf.range(
            1.0, 4.0)[tf.newaxis])
    g_z = tape.gradient(loss, z).numpy()
    g_books = [tf.convert_to_tensor(g).numpy()  # IndexedSlices (gather)
               for g in tape.gradient(loss, q.codebooks)]
    # Reference: d/dz = 2 beta / B sum_l (r_{l-1} - e_l);
    # d/dE^l_k = -2 / B sum_{i: c_il = k} (r_{i,l-1} - E^l_k).
    r = z.numpy().astype(np.float64)
    want_z = np.zeros_like(r)
    for level, book in enumerate(books):
        c = ((r[:, None] - book[None]) ** 2).sum(-1).argmin(1)
        diff = r - book[c]
        want_z += 2 * beta * diff / len(r)
        want_book = np.zeros_like(book, np.float64)
        np.add.at(want_book, c, -2 * diff / len(r))
        np.testing.assert_allclose(g_books[level], want_book, atol=1e-5)
        r = diff
    np.testing.assert_allclose(g_z, want_z, atol=1e-5)
    # Straight-through: identity to z, nothing to the codebooks.
    np.testing.assert_allclose(
        tape.gradient(st, z).numpy(), np.tile([1.0, 2.0, 3.0], (16, 1)))
    assert all(g is None for g in tape.gradient(st, q.codebooks))


def test_usage_counts_only_in_training():
    q = _quantizer(HAND_BOOKS)
    z = tf.constant(HAND_Z)
    q(z)
    assert q.usage_counts[0].numpy().sum() == 0
    q(z, training=True)
    q(z, training=True)
    np.testing.assert_array_equal(q.usage_counts[0].numpy(), [2, 2])
    np.testing.assert_array_equal(q.usage_counts[1].numpy(), [2, 2])


def _clustered(rng, centres, per, noise):
    centres = np.asarray(centres, np.float64)
    labels = np.repeat(np.arange(len(centres)), per)
    points = centres[labels] + noise * rng.normal(
        size=(len(labels), centres.shape[1]))
    return points.astype(np.float32), labels


def test_kmeans_init_uses_every_code_on_clustered_data():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 4)) * 10
    z, labels = _clustered(rng, centres, 30, 0.3)
    q = ResidualQuantizer([8, 3], 4)
    q.kmeans_init(z, iterations=10, seed=0)
    assert bool(q.initialized.numpy())
    codes = q(tf.constant(z))["codes"].numpy()
    assert len(np.unique(codes[:, 0])) == 8
    assert len(np.unique(codes[:, 1])) == 3
    # Level 1 recovers the clusters exactly (a bijection).
    pairs = set(zip(codes[:, 0].tolist(), labels.tolist()))
    assert len(pairs) == 8


def test_kmeans_with_fewer_points_than_codes():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(3, 2))
    centres = kmeans(pts, 5, 5, rng)
    assert centres.shape == (5, 2) and np.all(np.isfinite(centres))


def test_dead_code_reseeding_revives_a_code():
    rng = np.random.default_rng(5)
    z, _ = _clustered(rng, [[5, 0], [-5, 0], [0, 5]], 20, 0.2)
    far = [[5, 0], [-5, 0], [100, 100]]  # Code 2 is never the nearest.
    q = _quantizer([far])
    q(tf.constant(z), training=True)
    usage = q.usage_counts[0].numpy()
    assert usage.sum() == 60 and usage[2] == 0
    assert q.reseed_dead_codes(z, threshold=1, seed=0) == [1]
    new = q.codebooks[0].numpy()
    np.testing.assert_allclose(new[:2], far[:2])
    assert np.min(np.abs(z - new[2]).sum(1)) < 1e-6  # a batch residual
    assert q.usage_counts[0].numpy().sum() == 0  # a new window
    q(tf.constant(z), training=True)
    assert q.usage_counts[0].numpy()[2] > 0


def test_reseed_threshold_counts_rare_codes_dead():
    q = _quantizer(HAND_BOOKS)
    q(tf.constant(HAND_Z), training=True)  # every code used once
    assert q.reseed_dead_codes(np.asarray(HAND_Z), threshold=1) == [0, 0]
    q(tf.constant(HAND_Z), training=True)
    assert q.reseed_dead_codes(np.asarray(HAND_Z), threshold=2) == [2, 2]


# EMA hand case, one level, d = 0.5: E = {(0, 0), (4, 0)}, N = (1, 1).
# Batch z = (1, 0), (3, 0), (5, 2): codes 0, 1, 1; n = (1, 2),
# s = ((1, 0), (8, 2)).
# N <- .5 (1, 1) + .5 (1, 2) = (1, 1.5).
# E_0 <- (0, 0) + .5 ((1, 0) - 1 (0, 0)) / 1 = (.5, 0).
# E_1 <- (4, 0) + .5 ((8, 2) - 2 (4, 0)) / 1.5 = (4, 2/3).
# (= S / N with S <- .5 (0, 0) + .5 (1, 0) and .5 (4, 0) + .5 (8, 2)).
def test_ema_update_hand_values():
    q = _quantizer([[[0, 0], [4, 0]]], codebook_update="ema", ema_decay=0.5)
    assert q.trainable_weights == []
    q(tf.constant([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0]]), training=True)
    np.testing.assert_allclose(q.codebooks[0].numpy(),
                               [[0.5, 0.0], [4.0, 2.0 / 3.0]], atol=1e-6)
    np.testing.assert_allclose(q._ema_counts[0].numpy(), [1.0, 1.5])
    # Inference leaves the codebook alone.
    q(tf.constant([[1.0, 0.0]]))
    np.testing.assert_allclose(q.codebooks[0].numpy()[0], [0.5, 0.0])


def test_ema_codebooks_follow_their_clusters():
    rng = np.random.default_rng(8)
    centres = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    z, _ = _clustered(rng, centres, 40, 0.3)
    q = ResidualQuantizer([3], 2, codebook_update="ema", ema_decay=0.8)
    q.kmeans_init(z[::7], iterations=0, seed=0)  # rough start
    for _ in range(40):
        q(tf.constant(z), training=True)
    got = q.codebooks[0].numpy()
    for c in centres:
        assert np.min(np.linalg.norm(got - c, axis=1)) < 0.2
    np.testing.assert_allclose(q.get_config()["ema_decay"], 0.8)


def test_layer_harness():
    rng = np.random.default_rng(6)
    z = tf.constant(rng.normal(size=(10, 4)).astype(np.float32))
    check_layer(lambda: ResidualQuantizer([5, 3], 4, beta=0.25), {"z": z})


def test_traces_with_unknown_batch_and_float16():
    q = _quantizer(HAND_BOOKS)
    fn = tf.function(lambda z: q(z)["codes"], input_signature=[
        tf.TensorSpec([None, 2], tf.float32)])
    np.testing.assert_array_equal(fn(tf.constant(HAND_Z)).numpy(),
                                  [[1, 0], [0, 1]])
    mixed = _quantizer(HAND_BOOKS, dtype="mixed_float16")
    out = mixed(tf.constant(HAND_Z))
    assert out["quantized"].dtype == tf.float16
    assert mixed.codebooks[0].dtype == tf.float32
    np.testing.assert_array_equal(out["codes"].numpy(), [[1, 0], [0, 1]])
    np.testing.assert_allclose(float(out["commitment_loss"]), 3.8,
                               rtol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    pytest.param({"codebook_sizes": [], "latent_dim": 2},
                 "codebook_sizes", id="no_levels"),
    pytest.param({"codebook_sizes": [4, 0], "latent_dim": 2},
                 r"codebook_sizes.*\[4, 0\]", id="zero_size"),
    pytest.param({"codebook_sizes": [4], "latent_dim": 0},
                 "latent_dim.*0", id="latent_dim"),
    pytest.param({"codebook_sizes": [4], "latent_dim": 2, "beta": -1.0},
                 "beta.*-1.0", id="beta"),
    pytest.param({"codebook_sizes": [4], "latent_dim": 2,
                  "codebook_update": "adam"},
                 "codebook_update.*'adam'", id="codebook_update"),
    pytest.param({"codebook_sizes": [4], "latent_dim": 2,
                  "ema_decay": 1.0},
                 r"ema_decay.*\[0, 1\).*1.0", id="ema_decay"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResidualQuantizer(**kwargs)


def test_wrong_latent_width_is_named():
    q = ResidualQuantizer([4], 3)
    with pytest.raises(ValueError, match=r"latent_dim = 3.*\[5, 2\]"):
        q(tf.zeros([5, 2]))
    with pytest.raises(ValueError, match=r"received shape \[4, 2\]"):
        q.kmeans_init(np.zeros([4, 2]))


# ------------------------------------------------------------------- RQVAE
def _rqvae(beta=0.25, **kwargs):
    model = RQVAE(content_dim=5, latent_dim=3, hidden_dims=[8],
                  codebook_sizes=[4, 2], beta=beta, **kwargs)
    x = np.random.default_rng(7).normal(size=(32, 5)).astype(np.float32)
    model.initialize_codebooks(x, seed=0)
    return model, tf.constant(x)


def test_straight_through_reaches_the_encoder():
    model, x = _rqvae(beta=0.0)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        recon = out["reconstruction_loss"]
    grads = tape.gradient(recon, model.encoder.trainable_variables
                          + model.quantizer.codebooks)
    enc = grads[:len(model.encoder.trainable_variables)]
    assert all(g is not None and np.any(g.numpy()) for g in enc)
    # Reconstruction does not train the codebooks (straight-through).
    assert all(g is None for g in grads[len(enc):])


def test_commitment_gradients_reach_codebooks_and_encoder():
    model, x = _rqvae()
    with tf.GradientTape() as tape:
        loss = model(x, training=True)["commitment_loss"]
    grads = tape.gradient(loss, model.quantizer.codebooks
                          + model.encoder.trainable_variables)
    assert all(g is not None and np.any(tf.convert_to_tensor(g).numpy())
               for g in grads)


def test_rqvae_train_step_lowers_the_loss():
    model, x = _rqvae()
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    first = model.train_on_batch(x, return_dict=True)
    for _ in range(30):
        last = model.train_on_batch(x, return_dict=True)
    assert last["loss"] < first["loss"]
    out = model.tokenize(x)
    assert out["codes"].shape == (32, 2) and out["z"].shape == (32, 3)
    codes, zhat = model.quantizer.quantize(out["z"])
    np.testing.assert_array_equal(out["codes"].numpy(), codes.numpy())


def test_rqvae_input_normalization_checks():
    model, _ = _rqvae()
    with pytest.raises(ValueError, match=r"mean must have shape \[5\]"):
        model.set_input_normalization(np.zeros(4), np.ones(5))
    with pytest.raises(ValueError, match="scale must be > 0"):
        model.set_input_normalization(np.zeros(5), np.zeros(5))
    clone = RQVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("norm", [pytest.param("rms", id="rms"),
                                  pytest.param("layer", id="layer")])
def test_latent_norm_fixes_the_latent_scale(norm):
    model, x = _rqvae(latent_norm=norm)
    z = model.encode(x * 100.0).numpy()
    # Every ||z||^2 = Ds = 3, whatever the input's scale.
    np.testing.assert_allclose((z ** 2).sum(-1), 3.0, rtol=1e-4)
    if norm == "layer":
        np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-5)
    out = model(x, training=False)
    np.testing.assert_allclose(out["z"].numpy(), model.encode(x).numpy(),
                               atol=1e-6)
    assert model.get_config()["latent_norm"] == norm


def test_latent_norm_none_is_the_encoder_output():
    model, x = _rqvae()
    np.testing.assert_allclose(
        model.encode(x).numpy(),
        model.encoder(model.standardize(x)).numpy(), atol=1e-6)


def test_rqvae_fit_reports_the_latent_scale():
    model, x = _rqvae(latent_norm="rms", codebook_update="ema")
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    logs = model.fit(tf.data.Dataset.from_tensors(x).repeat(3), epochs=2,
                     verbose=0).history
    np.testing.assert_allclose(logs["latent_rms"], [1.0, 1.0], rtol=1e-4)
    assert all(v > 0 for v in logs["prototype_rms"])
    # EMA: the codebooks are not among the optimiser's variables.
    assert not any("codebook" in v.name for v in model.trainable_variables)


def test_rqvae_bad_latent_norm():
    with pytest.raises(ValueError, match="latent_norm.*'l2'"):
        RQVAE(5, 3, [8], [4], latent_norm="l2")
