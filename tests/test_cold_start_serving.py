"""A cold-start user (empty history, width N' = 0) is scored everywhere.

Issue 22, item 1: a request whose history lists are empty failed with
`indices = 1 is not in [0, 1)` (the timestamp-order check padded an
[R, 0] comparison to [R, 1]). Here: every compressor alone with N = 0,
every signature of the `ServingModule` for every compressor and branch
combination, and every signature of an exported SavedModel through the
development server's request path (`serving.model_version.run_predict`).
"""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from hisac_tf import config as config_lib
from hisac_tf.compressors import COMPRESSOR_NAMES
from hisac_tf.data.feature_spec import HISTORY_FEATURES, FeatureSpec
from hisac_tf.export import signatures as sig
from hisac_tf.models.build import build_model
from serving import model_version
from tests.test_compressors import factory, history_inputs
from tests.test_hisac_ranker import random_batch, random_tables

CFG = config_lib.load_config("tiny")
SPEC = FeatureSpec.from_config(CFG.data)
R = 3

SLOW = pytest.mark.slow  # Each traces four signatures: ~15 s on 2 cores.
BRANCHES = [
    pytest.param([f'model.compressor="{name}"'], id=f"two_branch_{name}",
                 marks=() if name == "hisac" else SLOW)
    for name in COMPRESSOR_NAMES
] + [
    pytest.param(['model.compressor="none"'], id="short_only_counts",
                 marks=SLOW),
    pytest.param(['model.compressor="none"', "model.count_slots=0"],
                 id="short_only"),
    pytest.param(["model.short_term_length=0"], id="long_only_counts",
                 marks=SLOW),
    pytest.param(["model.short_term_length=0", "model.count_slots=0"],
                 id="long_only"),
    pytest.param(["model.count_slots=0"], id="two_branch_no_counts",
                 marks=SLOW),
    pytest.param(["model.routing_top_m=3"], id="two_branch_sparse",
                 marks=SLOW),
]


def cold_request(batch: dict) -> dict:
    """`batch`'s users and candidates with empty histories [R, 0]."""
    out = {k: v for k, v in batch.items() if k != "labels"}
    for name in HISTORY_FEATURES:
        out[name] = tf.zeros([R, 0], tf.int64)  # [R, N' = 0]
    out["hist_length"] = tf.zeros([R], tf.int32)
    return out


def cold_examples(request: dict) -> np.ndarray:
    """One serialized impression per first candidate, empty histories."""
    values = {k: np.asarray(v) for k, v in request.items()}
    return np.array([
        SPEC.impression_example(
            {k: (v[r] if v.ndim == 2 else v[r]) for k, v in values.items()},
            0).SerializeToString()
        for r in range(R)
    ], dtype=object)


@pytest.mark.parametrize("name", [pytest.param(n, id=n)
                                  for n in COMPRESSOR_NAMES])
def test_every_compressor_takes_an_empty_history(name):
    inputs = {k: (v[:, :0] if k != "codebooks" else v)
              for k, v in history_inputs().items()}  # N = 0
    values = inputs.pop("values")  # [B, 0, D]
    layer = factory(name)()
    out = layer(values, **inputs)
    assert not out["group_mask"].numpy().any()
    assert int(tf.reduce_sum(out["num_active"])) == 0
    for key, tensor in out.items():
        if tensor.dtype.is_floating:
            assert np.isfinite(tensor.numpy()).all(), key


@pytest.mark.parametrize("override", BRANCHES)
def test_cold_start_scores_on_every_signature(override):
    cfg = config_lib.load_config("tiny", override)
    model = build_model(cfg, SPEC, random_tables())
    batch = random_batch(b=R)
    model(batch)
    module = sig.ServingModule(model, SPEC, version=1)
    request = cold_request(batch)
    # The model's own answer for an empty history (one padding column).
    padded = dict(request)
    for name in HISTORY_FEATURES:
        padded[name] = tf.zeros([R, 1], tf.int64)
    want = tf.sigmoid(model(padded, training=False)).numpy()
    count = request["cand_count"].numpy()
    valid = np.arange(want.shape[1])[None] < count[:, None]
    want = np.where(valid, want, 0.0)

    got = module.serving_default(request)[sig.CTR].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    state = module.encode_user(
        {k: request[k] for k in module.user_input_names})
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    got = module.score_with_state({**state, **cands})[sig.CTR].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    examples = cold_examples(request)
    got = module.predict_examples(tf.constant(examples))[sig.CTR].numpy()
    np.testing.assert_allclose(got, want[:, 0], atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default (two-branch HiSAC with counts) ranker, saved and
    loaded as the development server loads a version."""
    model = build_model(CFG, SPEC, random_tables())
    batch = random_batch(b=R)
    model(batch)
    module = sig.ServingModule(model, SPEC, version=1)
    path = str(tmp_path_factory.mktemp("cold") / "1")
    tf.saved_model.save(module, path, signatures=module.signatures())
    request = cold_request(batch)
    return model_version.load_version(path, 1), module, request


def predict(loaded, signature: str, inputs: dict) -> np.ndarray:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "hisac"
    req.model_spec.signature_name = signature
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    response = model_version.run_predict(loaded, req, 64 << 20)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


@pytest.mark.slow
def test_exported_serving_default_scores_a_cold_start_user(exported):
    loaded, module, request = exported
    ctr = predict(loaded, sig.SERVING_DEFAULT, request)[sig.CTR]
    want = module.serving_default(request)[sig.CTR].numpy()
    assert ctr.shape == want.shape and np.isfinite(ctr).all()
    np.testing.assert_allclose(ctr, want, atol=1e-5)


@pytest.mark.slow
def test_exported_two_step_scores_a_cold_start_user(exported):
    loaded, module, request = exported
    user = {k: request[k] for k in module.user_input_names}
    state = predict(loaded, sig.ENCODE_USER, user)
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    ctr = predict(loaded, sig.SCORE_WITH_STATE, {**state, **cands})[sig.CTR]
    want = module.serving_default(request)[sig.CTR].numpy()
    np.testing.assert_allclose(ctr, want, atol=1e-5)


@pytest.mark.slow
def test_exported_predict_examples_scores_cold_start_users(exported):
    loaded, module, request = exported
    examples = cold_examples(request)  # every history empty
    ctr = predict(loaded, sig.PREDICT_EXAMPLES,
                  {sig.EXAMPLES: examples})[sig.CTR]
    want = module.serving_default(request)[sig.CTR].numpy()[:, 0]
    assert ctr.shape == (R,) and np.isfinite(ctr).all()
    np.testing.assert_allclose(ctr, want, atol=1e-5)
