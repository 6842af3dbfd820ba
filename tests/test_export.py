"""Export → load → serve: signatures, warmup, op list, bad inputs, atomicity.

One tiny model is trained (6 steps) and exported once for the module;
every signature of the loaded SavedModel is compared with
`sigmoid(model(features))` of the trained model in this process.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import (
    CANDIDATE_FEATURES,
    HISTORY_FEATURES,
    DataError,
    FeatureSpec,
)
from hisac_tf.models.build import SUPPORTED_COMPRESSORS, build_model
from hisac_tf.tokenizer.semantic_tables import load_semantic_tables
from pipelines import tokenize_items, train
from hisac_tf.data import synthetic
from hisac_tf.data.request_values import request_values
from hisac_tf.export import exporter, verification, warmup
from hisac_tf.export import signatures as sig
from hisac_tf.export import tf_serving_config

ATOL = 1e-5
OOV_ID = 10**12  # Far outside the synthetic item ids (1..200).


@pytest.fixture(autouse=True)
def _seed():
    """Seeds numpy only (overrides conftest's `_seed` for this module).

    `tf.random.set_seed` clears the eager kernel cache, so every test
    would re-optimise the loaded SavedModel's functions (about 1-2 s per
    test); nothing here draws TensorFlow random numbers.
    """
    np.random.seed(0)
    yield


def overrides(root):
    return [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        "tokenizer.epochs=5",
        f"training.model_dir={root}/model",
        "training.train_steps=6",
        "training.checkpoint_every=6",
        "training.log_every=6",
        "training.mode=train",
        f"export.export_dir={root}/export",
    ]


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("export"))
    cfg = config_lib.load_config("tiny", overrides(root))
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    train.main(cfg, progress=False)
    began = time.time()
    summary = exporter.export_model(cfg, progress=False)
    seconds = time.time() - began
    print(f"\nexport of the tiny model: {seconds:.1f} s", file=sys.stderr)
    spec, model, _, _, _ = exporter.restore(cfg)
    batch = exporter.first_batch(cfg, spec, 8)
    return types.SimpleNamespace(
        cfg=cfg, root=root, summary=summary, spec=spec, model=model,
        batch={k: v.numpy() for k, v in batch.items()},
        loaded=tf.saved_model.load(summary["path"]),
    )


def inputs_of(batch, names):
    return {k: np.asarray(batch[k]).copy() for k in names}


def call(exp, signature, inputs):
    fn = exp.loaded.signatures[signature]
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def reference(exp, features):
    """sigmoid(model(features)) [R, C], 0 past cand_count."""
    feats = {k: tf.constant(v) for k, v in features.items()}
    probs = tf.sigmoid(exp.model(feats, training=False)).numpy()
    count = np.asarray(features["cand_count"])
    valid = np.arange(probs.shape[1])[None, :] < count[:, None]
    return np.where(valid, probs, 0.0)


def request_names(exp):
    return tuple(exp.spec.input_signature())


def user_names(exp):
    return exp.spec.scalar_features + HISTORY_FEATURES + ("hist_length",)


# ------------------------------------------------------------------ layout
@pytest.mark.slow
def test_export_writes_version_with_assets_and_configs(exp):
    export_dir = exp.cfg.export.export_dir
    assert exporter.existing_versions(export_dir) == [1]
    assert exp.summary["version"] == 1
    leftovers = [n for n in os.listdir(export_dir)
                 if n.startswith(exporter.TMP_PREFIX)]
    assert leftovers == []
    version_dir = os.path.join(export_dir, "1")
    for name in ("saved_model.pb", "variables",
                 "assets.extra/tf_serving_warmup_requests",
                 "assets.extra/config.json",
                 "assets.extra/export_summary.json"):
        assert os.path.exists(os.path.join(version_dir, name)), name
    with open(os.path.join(version_dir, "assets.extra/config.json")) as f:
        assert json.load(f) == exp.cfg.to_dict()
    with open(os.path.join(version_dir, "assets.extra",
                           exporter.SUMMARY_FILE)) as f:
        saved = json.load(f)
    assert saved["model_fingerprint"] == exp.summary["model_fingerprint"]
    assert saved["step"] == 6
    assert set(saved["signatures"]) == set(sig.SIGNATURE_NAMES)
    inputs = saved["signatures"]["serving_default"]["inputs"]
    assert inputs["hist_length"] == ["int32", [None]]
    assert inputs["cand_item_ids"] == ["int64", [None, None]]
    config = tf_serving_config.read(
        os.path.join(export_dir, tf_serving_config.MODELS_CONFIG))
    model = config.model_config_list.config[0]
    assert model.name == exp.cfg.export.model_name
    assert model.base_path == os.path.abspath(export_dir)
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1, "canary": 1}
    loaded = exp.loaded
    # The frozen tokenizer tables travel inside the SavedModel.
    tables = load_semantic_tables(exp.cfg.tokenizer.output_dir)
    saved = {v.name.split("/")[-1]: v.numpy() for v in loaded.weights}
    np.testing.assert_array_equal(saved["item_ids:0"], tables.item_ids)
    np.testing.assert_array_equal(saved["sids:0"], tables.sids)
    np.testing.assert_allclose(saved["latents:0"], tables.latents)
    assert int(loaded.model_fingerprint.numpy()) == \
        exp.summary["model_fingerprint"]
    assert int(loaded.export_version.numpy()) == 1
    assert int(loaded.max_history.numpy()) == exp.spec.max_history


# -------------------------------------------------------------- equality
@pytest.mark.slow
def test_serving_default_equals_model(exp):
    request = inputs_of(exp.batch, request_names(exp))
    got = call(exp, sig.SERVING_DEFAULT, request)[sig.CTR]
    want = reference(exp, request)
    assert got.shape == want.shape == exp.batch["cand_item_ids"].shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    padded = np.arange(got.shape[1])[None, :] >= request["cand_count"][:, None]
    assert padded.any() and np.all(got[padded] == 0.0)
    assert np.all((got[~padded] > 0) & (got[~padded] < 1))


@pytest.mark.slow
def test_encode_user_then_score_with_state_equals_model(exp):
    request = inputs_of(exp.batch, request_names(exp))
    state = call(exp, sig.ENCODE_USER,
                 {k: request[k] for k in user_names(exp)})
    assert set(state) == set(exp.model.state_keys) | {sig.FINGERPRINT}
    assert {"short_keys", "count_keys"} <= set(state)  # two branches
    rows = len(request["user_id"])
    assert np.all(state[sig.FINGERPRINT] == exp.summary["model_fingerprint"])
    assert state[sig.FINGERPRINT].shape == (rows,)
    assert state["mask"].dtype == np.int32
    assert set(np.unique(state["mask"])) <= {0, 1}
    assert state["keys"].shape[0] == rows
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    got = call(exp, sig.SCORE_WITH_STATE, {**state, **cands})[sig.CTR]
    np.testing.assert_allclose(got, reference(exp, request), atol=ATOL,
                               rtol=0)
    # A cached state scores other candidates too (here: reversed order).
    flipped = {k: v[:, ::-1].copy() if v.ndim == 2 else v
               for k, v in cands.items()}
    flipped["cand_count"] = np.full(rows, request["cand_item_ids"].shape[1],
                                    np.int32)
    flipped["cand_item_ids"] = np.where(
        flipped["cand_item_ids"] > 0, flipped["cand_item_ids"], OOV_ID)
    got = call(exp, sig.SCORE_WITH_STATE, {**state, **flipped})[sig.CTR]
    want = reference(exp, {**request, **flipped})
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def impressions(exp, request):
    """Serialized impressions of every valid candidate, row-major."""
    out = []
    for r in range(len(request["user_id"])):
        out += [ex.SerializeToString() for ex in exp.spec.impression_examples(
            request_values(request, r))]
    return np.array(out, dtype=object)


@pytest.mark.slow
def test_predict_examples_equals_model(exp):
    request = inputs_of(exp.batch, request_names(exp))
    got = call(exp, sig.PREDICT_EXAMPLES,
               {sig.EXAMPLES: impressions(exp, request)})[sig.CTR]
    want = reference(exp, request)
    valid = (np.arange(want.shape[1])[None, :]
             < request["cand_count"][:, None])
    assert got.shape == (valid.sum(),)
    np.testing.assert_allclose(got, want[valid], atol=ATOL, rtol=0)


def long_history_request(exp, extra):
    """One request whose history is N + extra long (some ids unknown)."""
    n = exp.spec.max_history
    length = n + extra
    rng = np.random.default_rng(7)
    items = rng.integers(1, 200, size=length)
    items[::5] = OOV_ID  # Unknown items take the OOV path.
    request_time = int(exp.batch["request_time"][0])
    return {
        "user_id": np.array([3]), "request_time": np.array([request_time]),
        "gender": np.array([1]), "age_bucket": np.array([2]),
        "hist_item_ids": items[None, :],
        "hist_category_ids": rng.integers(1, 12, size=(1, length)),
        "hist_behaviors": rng.integers(1, 5, size=(1, length)),
        "hist_timestamps": np.sort(
            request_time - rng.integers(60, 10**6, size=length))[None, :],
        "hist_length": np.array([length], np.int32),
        "cand_item_ids": np.array([[5, OOV_ID, 17]]),
        "cand_category_ids": np.array([[2, 0, 3]]),
        "cand_count": np.array([3], np.int32),
    }


def newest(request, n):
    """The reader's truncation: keep the newest n history items."""
    out = dict(request)
    for name in HISTORY_FEATURES:
        out[name] = request[name][:, -n:]
    out["hist_length"] = np.minimum(request["hist_length"], n)
    return out


@pytest.mark.slow
def test_long_history_keeps_newest_n_and_unknown_ids_score(exp):
    n = exp.spec.max_history
    request = {k: np.asarray(v, np.int32 if k in ("hist_length", "cand_count")
                             else np.int64)
               for k, v in long_history_request(exp, extra=7).items()}
    want = reference(exp, newest(request, n))
    assert np.all(np.isfinite(want)) and np.all(want > 0)
    got = call(exp, sig.SERVING_DEFAULT, request)[sig.CTR]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    # The same history through per-impression examples, which the
    # FeatureSpec reader truncates the same way.
    examples = impressions(exp, request)
    got = call(exp, sig.PREDICT_EXAMPLES, {sig.EXAMPLES: examples})
    np.testing.assert_allclose(got[sig.CTR], want[0], atol=ATOL, rtol=0)
    read = exp.spec.pad_impressions(
        exp.spec.parse_impressions(tf.constant(examples)))
    assert np.all(read["hist_raw_length"].numpy() == n + 7)
    assert np.all(read["hist_length"].numpy() == n)
    np.testing.assert_array_equal(
        read["hist_item_ids"].numpy()[0], request["hist_item_ids"][0, -n:])
    read_probs = tf.sigmoid(exp.model(read, training=False)).numpy()
    np.testing.assert_allclose(read_probs[:, 0], want[0], atol=ATOL, rtol=0)
    # And through the cached state.
    state = call(exp, sig.ENCODE_USER,
                 {k: request[k] for k in user_names(exp)})
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    got = call(exp, sig.SCORE_WITH_STATE, {**state, **cands})[sig.CTR]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_tf_serving_padding_is_ignored(exp):
    """Batching pads wider N and C with the tensor's first element."""
    request = inputs_of(exp.batch, request_names(exp))
    want = call(exp, sig.SERVING_DEFAULT, request)[sig.CTR]
    padded = dict(request)
    for names, extra in ((HISTORY_FEATURES, 9), (CANDIDATE_FEATURES, 3)):
        for name in names:
            x = request[name]
            fill = np.full((x.shape[0], extra), x.flat[0], x.dtype)
            padded[name] = np.concatenate([x, fill], axis=1)
    # Entries past the lengths hold garbage too (here: the first element).
    for name, count in (("hist_item_ids", "hist_length"),
                        ("cand_item_ids", "cand_count")):
        x = padded[name]
        past = np.arange(x.shape[1])[None, :] >= padded[count][:, None]
        padded[name] = np.where(past, x.flat[0], x)
    got = call(exp, sig.SERVING_DEFAULT, padded)[sig.CTR]
    c = want.shape[1]
    np.testing.assert_allclose(got[:, :c], want, atol=ATOL, rtol=0)
    assert np.all(got[:, c:] == 0.0)


@pytest.mark.slow
def test_serving_default_runs_user_side_once(exp):
    module = sig.ServingModule(exp.model, exp.spec, version=1)
    calls = {"compress_user": [], "score": []}
    model = exp.model
    originals = {name: getattr(model, name) for name in calls}

    def spy(name):
        def wrapped(*args, **kwargs):
            calls[name].append(args)
            return originals[name](*args, **kwargs)
        return wrapped

    try:
        for name in calls:
            setattr(model, name, spy(name))
        module.serving_default.get_concrete_function()
    finally:
        for name in calls:
            delattr(model, name)
    assert len(calls["compress_user"]) == 1
    assert len(calls["score"]) == 1
    user_features = calls["compress_user"][0][0]
    assert not set(CANDIDATE_FEATURES) & set(user_features)
    assert user_features["user_id"].shape.rank == 1  # [R], not [R * C]
    state, cands = calls["score"][0][:2]
    assert state["keys"].shape.rank == 4  # [R, H, A, dk]
    assert cands["cand_item_ids"].shape.rank == 2  # [R, C]


@pytest.mark.slow
@pytest.mark.parametrize("compressor", [
    pytest.param("sim_hard", id="sim_hard"),
])
def test_signatures_serve_other_compressors(exp, compressor):
    """A baseline with G = N groups and an extra state key."""
    if compressor not in SUPPORTED_COMPRESSORS:
        pytest.skip(f"compressor {compressor} is not built here")
    cfg = exp.cfg.replace(model={"compressor": compressor})
    tables = load_semantic_tables(cfg.tokenizer.output_dir)
    model = build_model(cfg, exp.spec, tables)
    request = inputs_of(exp.batch, request_names(exp))
    want = reference(types.SimpleNamespace(model=model), request)
    module = sig.ServingModule(model, exp.spec, version=1)
    assert set(module.state_shapes) == set(module.state_keys) | {
        sig.FINGERPRINT}
    assert "group_categories" in module.state_keys  # beyond STATE_KEYS
    groups = module.state_shapes["keys"][0][2]  # [None, H, G, dk]
    assert groups in (None, model.num_groups)
    tensors = {k: tf.constant(v) for k, v in request.items()}
    got = module.serving_default(tensors)[sig.CTR].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    state = module.encode_user(
        {k: tensors[k] for k in module.user_input_names})
    cands = {k: tensors[k] for k in sig.CANDIDATE_INPUTS}
    got = module.score_with_state({**state, **cands})[sig.CTR].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    # A longer history than N is cut to the newest N here too.
    long = {k: np.asarray(v) for k, v in long_history_request(exp, 4).items()}
    long = {k: tf.constant(v, tf.int32 if k in ("hist_length", "cand_count")
                           else tf.int64) for k, v in long.items()}
    got = module.serving_default(long)[sig.CTR].numpy()
    want = reference(types.SimpleNamespace(model=model), newest(
        {k: v.numpy() for k, v in long.items()}, exp.spec.max_history))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


# ------------------------------------------------------------- bad inputs
def _set(name, fn):
    def change(x):
        x[name] = fn(x[name])
    return change


def _item(name, row, col, value):
    def change(x):
        x[name] = x[name].copy()
        x[name][row, col] = value
    return change


def _no_candidates(x):
    for name in CANDIDATE_FEATURES:
        x[name] = x[name][:, :0]


def _unsorted_history(x):
    n = int(x["hist_length"][0])
    x["hist_timestamps"] = x["hist_timestamps"].copy()
    x["hist_timestamps"][0, :n] = x["hist_timestamps"][0, :n][::-1]


BAD_REQUESTS = [
    pytest.param(_set("hist_length", lambda v: v + 1000), "hist_length",
                 id="hist_length_over_width"),
    pytest.param(_set("hist_length", lambda v: v * 0 - 1), "hist_length",
                 id="hist_length_negative"),
    pytest.param(_set("cand_count", lambda v: v * 0), "cand_count",
                 id="empty_candidate_list"),
    pytest.param(_set("cand_count", lambda v: v + 100), "cand_count",
                 id="cand_count_over_width"),
    pytest.param(_no_candidates, "cand_count", id="zero_width_candidates"),
    pytest.param(_item("cand_item_ids", 1, 0, -5), "cand_item_ids",
                 id="negative_candidate_id"),
    pytest.param(_item("cand_item_ids", 0, 0, 0), "cand_item_ids",
                 id="padding_inside_cand_count"),
    pytest.param(_item("hist_item_ids", 0, 0, -3), "hist_item_ids",
                 id="negative_history_id"),
    pytest.param(_item("hist_category_ids", 0, 0, -1), "hist_category_ids",
                 id="negative_category"),
    pytest.param(_set("user_id", lambda v: -v), "user_id",
                 id="negative_user_id"),
    pytest.param(_set("user_id", lambda v: np.concatenate([v, v[:1]])),
                 "user_id", id="rows_disagree"),
    pytest.param(_set("cand_category_ids", lambda v: v[:, :-1]),
                 "cand_category_ids", id="candidate_shapes_disagree"),
    pytest.param(_set("hist_behaviors", lambda v: v[:, :-1]),
                 "hist_behaviors", id="history_shapes_disagree"),
    pytest.param(_set("hist_timestamps", lambda v: v + 10**9),
                 "hist_timestamps", id="history_after_request"),
    pytest.param(_unsorted_history, "sorted", id="history_not_sorted"),
]


@pytest.mark.slow
@pytest.mark.parametrize("change, field", BAD_REQUESTS)
def test_bad_request_is_invalid_argument(exp, change, field):
    request = inputs_of(exp.batch, request_names(exp))
    assert np.all(request["hist_length"] >= 2)
    change(request)
    with pytest.raises(tf.errors.InvalidArgumentError, match=field):
        call(exp, sig.SERVING_DEFAULT, request)


@pytest.mark.slow
@pytest.mark.parametrize("name, dtype", [
    pytest.param("hist_length", np.int64, id="int64_lengths"),
    pytest.param("cand_item_ids", np.float32, id="float_ids"),
])
def test_wrong_dtype_is_refused(exp, name, dtype):
    request = inputs_of(exp.batch, request_names(exp))
    request[name] = request[name].astype(dtype)
    with pytest.raises(tf.errors.InvalidArgumentError, match="int"):
        call(exp, sig.SERVING_DEFAULT, request)


@pytest.mark.slow
def test_wrong_rank_is_invalid_argument(exp):
    request = inputs_of(exp.batch, request_names(exp))
    for name in HISTORY_FEATURES:
        request[name] = request[name][:, 0]  # [R] instead of [R, N]
    with pytest.raises(tf.errors.InvalidArgumentError):
        call(exp, sig.SERVING_DEFAULT, request)


@pytest.mark.slow
def test_state_from_another_model_is_refused(exp):
    request = inputs_of(exp.batch, request_names(exp))
    state = call(exp, sig.ENCODE_USER,
                 {k: request[k] for k in user_names(exp)})
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    other = dict(state, model_fingerprint=state[sig.FINGERPRINT] + 1)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="model_fingerprint"):
        call(exp, sig.SCORE_WITH_STATE, {**other, **cands})
    broken = dict(state, mask=state["mask"] * 2 + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask"):
        call(exp, sig.SCORE_WITH_STATE, {**broken, **cands})
    short = {k: v[:-1] for k, v in state.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row"):
        call(exp, sig.SCORE_WITH_STATE, {**short, **cands})


@pytest.mark.slow
@pytest.mark.parametrize("name, value", [
    ("keys", np.nan), ("values", np.inf), ("bias", -np.inf),
    ("user_embedding", np.nan),
], ids=["keys_nan", "values_inf", "bias_minus_inf", "user_embedding_nan"])
def test_non_finite_state_is_refused_in_the_graph(exp, name, value):
    request = inputs_of(exp.batch, request_names(exp))
    state = call(exp, sig.ENCODE_USER,
                 {k: request[k] for k in user_names(exp)})
    cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
    bad = {k: v.copy() for k, v in state.items()}
    bad[name].reshape(-1)[-1] = value  # The last request's last entry.
    rows = bad[name].shape[0]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name} must be finite \(no NaN or inf\); "
                       rf"got\] \[-?(nan|inf)\] \[at request\] "
                       rf"\[{rows - 1}\]"):
        call(exp, sig.SCORE_WITH_STATE, {**bad, **cands})


@pytest.mark.slow
def test_bad_examples_are_invalid_argument(exp):
    request = inputs_of(exp.batch, request_names(exp))
    values = request_values(request, 0)
    good = exp.spec.impression_example(values, 0)
    missing = tf.train.Example()
    missing.CopyFrom(good)
    del missing.features.feature["cand_item_id"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="cand_item_id"):
        call(exp, sig.PREDICT_EXAMPLES, {sig.EXAMPLES: np.array(
            [good.SerializeToString(), missing.SerializeToString()],
            dtype=object)})
    uneven = dict(values, hist_behaviors=values["hist_behaviors"][:-1])
    bad = exp.spec.impression_example(uneven, 0)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="hist_behaviors"):
        call(exp, sig.PREDICT_EXAMPLES,
             {sig.EXAMPLES: np.array([bad.SerializeToString()], object)})


# ------------------------------------------------------------------ warmup
@pytest.mark.slow
def test_warmup_requests_parse_and_run(exp):
    path = os.path.join(exp.summary["path"], warmup.ASSETS_EXTRA,
                        warmup.WARMUP_FILE)
    logs = warmup.read_warmup(path)
    assert len(logs) == exp.summary["warmup_requests"] >= 4
    seen = set()
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == exp.cfg.export.model_name
        name = request.model_spec.signature_name
        seen.add(name)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = call(exp, name, inputs)
        if sig.CTR in out:
            assert np.all(np.isfinite(out[sig.CTR]))
    assert seen == set(sig.SIGNATURE_NAMES)
    # Real eval records: the user ids are those of the data.
    first = logs[0].predict_log.request.inputs["user_id"]
    assert tf.make_ndarray(first)[0] == exp.batch["user_id"][0]


# ----------------------------------------------------------------- op list
OP_CHECK = r"""
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

with open(sys.argv[1], "rb") as f:
    saved = saved_model_pb2.SavedModel.FromString(f.read())
ops = set()
for meta in saved.meta_graphs:
    ops.update(n.op for n in meta.graph_def.node)
    for fn in meta.graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
# Load and serve the warmup requests without any project code.
from tensorflow_serving.apis import prediction_log_pb2
loaded = tf.saved_model.load(sys.argv[2])
served = []
for record in tf.data.TFRecordDataset(sys.argv[3]):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    out = loaded.signatures[request.model_spec.signature_name](**{
        k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    served.append(request.model_spec.signature_name)
print(json.dumps({
    "ops": sorted(ops),
    "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None),
    "tfio_loaded": any(m.startswith("tensorflow_io") for m in sys.modules),
    "project_loaded": sorted({m.split(".")[0] for m in sys.modules} & {
        "hisac_tf", "pipelines", "serving", "tf_keras",
        "tensorflow_recommenders"}),
    "served": served,
}))
"""


@pytest.mark.slow
def test_graph_has_only_core_tensorflow_ops_and_needs_no_project_code(exp):
    path = exp.summary["path"]
    pb = os.path.join(path, "saved_model.pb")
    records = os.path.join(path, warmup.ASSETS_EXTRA, warmup.WARMUP_FILE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", OP_CHECK, pb, path, records],
        capture_output=True, text=True, env=env, timeout=120,
        cwd=os.path.dirname(path))
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not found["tfio_loaded"]
    assert found["unregistered"] == []
    assert not [o for o in found["ops"] if o.upper().startswith("IO")]
    # The model is really in there.
    for op in ("LowerBound", "TopKV2", "ResourceGather", "Einsum",
               "ParseExampleV2", "Assert"):
        assert op in found["ops"]
    assert found["ops"] == verification.graph_ops(exp.summary["path"])
    # A process with TensorFlow alone loads it and serves every request.
    assert found["project_loaded"] == []
    assert len(found["served"]) == exp.summary["warmup_requests"]


def test_impression_examples_from_a_request():
    spec = FeatureSpec(max_history=3, max_candidates=4)
    request = {
        "user_id": 5, "request_time": 100, "gender": 1, "age_bucket": 2,
        "hist_item_ids": [7, 8, 9, 10], "hist_category_ids": [1, 1, 2, 2],
        "hist_behaviors": [1, 2, 1, 1], "hist_timestamps": [10, 20, 30, 40],
        "cand_item_ids": [11, 12], "cand_category_ids": [3, 4],
    }
    examples = spec.impression_examples(request)
    assert len(examples) == 2
    raw = spec.parse_impressions(tf.constant(
        [e.SerializeToString() for e in examples]))
    assert raw["cand_item_id"].numpy().tolist() == [11, 12]
    assert raw["cand_category_id"].numpy().tolist() == [3, 4]
    padded = spec.pad_impressions(raw)
    assert padded["hist_item_ids"].numpy().tolist() == [[8, 9, 10]] * 2
    assert padded["hist_timestamps"].numpy().tolist() == [[20, 30, 40]] * 2
    assert padded["hist_length"].numpy().tolist() == [3, 3]
    assert padded["cand_item_ids"].numpy().tolist() == [[11], [12]]
    assert padded["cand_count"].numpy().tolist() == [1, 1]
    with pytest.raises(DataError, match="candidate index 2"):
        spec.impression_example(request, 2)
    with pytest.raises(DataError, match="cand_category_ids"):
        spec.impression_example(dict(request, cand_category_ids=[3]), 0)
    with pytest.raises(DataError, match="hist_behaviors"):
        spec.impression_example(dict(request, hist_behaviors=[1.5]), 0)
    with pytest.raises(DataError, match="gender"):
        spec.impression_example(
            {k: v for k, v in request.items() if k != "gender"}, 0)


# ---------------------------------------------------- versions, atomicity
def test_versions_count_up_and_never_overwrite(tmp_path):
    d = str(tmp_path)
    assert exporter.resolve_version(d, None) == 1
    for name in ("1", "3", "notes", exporter.TMP_PREFIX + "4-abc"):
        os.makedirs(os.path.join(d, name))
    open(os.path.join(d, "7"), "w").close()  # A file, not a version.
    assert exporter.existing_versions(d) == [1, 3]
    assert exporter.resolve_version(d, 0) == 4
    assert exporter.resolve_version(d, 9) == 9
    with pytest.raises(FileExistsError, match="version 3"):
        exporter.resolve_version(d, 3)
    with pytest.raises(ValueError, match="-2"):
        exporter.resolve_version(d, -2)


def test_concurrent_reservations_never_share_a_version(tmp_path):
    d = str(tmp_path)
    os.makedirs(os.path.join(d, "1"))
    got, errors = [], []
    start = threading.Barrier(6)

    def reserve():
        start.wait()
        try:
            got.append(exporter.reserve_version(d, None))
        except Exception as e:  # Reported below.
            errors.append(e)

    threads = [threading.Thread(target=reserve) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.version for r in got) == [2, 3, 4, 5, 6, 7]
    with pytest.raises(FileExistsError) as e:
        exporter.reserve_version(d, 4)  # Explicit and being written.
    text = str(e.value)
    assert "export version 4" in text and "another export" in text
    assert os.path.join(d, exporter.TMP_PREFIX + "4") in text
    assert f"pid {os.getpid()}" in text
    for r in got:
        r.release()
    assert sorted(os.listdir(d)) == ["1"]


def test_stale_reservations_are_removed(tmp_path):
    d = str(tmp_path)
    gone = subprocess.Popen(["true"])  # A pid that has ended.
    gone.wait()
    killed = exporter.reserve_version(d, 5)  # As a killed export's.
    with open(os.path.join(killed.path, exporter.OWNER_FILE), "w") as f:
        json.dump({"pid": gone.pid, "host": socket.gethostname(),
                   "started": 0}, f)
    os.makedirs(os.path.join(killed.model_path, "variables"))
    old = os.path.join(d, exporter.TMP_PREFIX + "3-abcdef12")  # No owner.
    os.makedirs(old)
    aged = time.time() - exporter.OWNERLESS_STALE_S - 60
    os.utime(old, (aged, aged))
    live = exporter.reserve_version(d, 7)  # This process: alive.
    r = exporter.reserve_version(d, None)
    assert r.version == 1
    assert sorted(os.listdir(d)) == [exporter.TMP_PREFIX + n
                                     for n in ("1", "7")]
    r.release()
    live.release()


def test_a_reservation_not_yet_owned_is_not_stale(tmp_path):
    # Between another export's mkdir and its owner file, its reservation
    # has no owner: removing it there let two exports share a version.
    d = str(tmp_path)
    fresh = os.path.join(d, exporter.TMP_PREFIX + "2")
    os.makedirs(fresh)
    assert exporter.remove_stale_reservations(d, time.time() + 1) == []
    with pytest.raises(FileExistsError):  # Still held by its export.
        exporter.reserve_version(d, 2)
    assert os.path.isdir(fresh)


@pytest.mark.slow
def test_failed_write_leaves_no_version(exp, tmp_path, monkeypatch):
    export_dir = str(tmp_path / "export")
    os.makedirs(os.path.join(export_dir, "1"))  # An earlier version.
    cfg = exp.cfg.replace(export={"export_dir": export_dir})
    module = sig.ServingModule(exp.model, exp.spec, version=2)

    def half_written(module, path, cfg, cases, summary):
        os.makedirs(os.path.join(path, "variables"))
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"\x08\x01partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(exporter, "write_export", half_written)
    with pytest.raises(OSError, match="simulated"):
        exporter.publish(cfg, module, [])
    assert sorted(os.listdir(export_dir)) == ["1"]


@pytest.mark.slow
def test_export_failing_its_checks_leaves_no_version(exp, tmp_path,
                                                     monkeypatch):
    """A complete but wrong SavedModel is caught by verify, then removed."""
    export_dir = str(tmp_path / "export")
    cfg = exp.cfg.replace(export={"export_dir": export_dir})
    module = sig.ServingModule(exp.model, exp.spec, version=1)
    def wrong_model(module, path, cfg, cases, summary):
        other = tf.Module()
        other.f = tf.function(lambda x: {"ctr": x * 2.0},
                              input_signature=[tf.TensorSpec([None])])
        tf.saved_model.save(other, path, signatures={
            "serving_default": other.f.get_concrete_function()})
        assert os.path.exists(os.path.join(path, "saved_model.pb"))

    monkeypatch.setattr(exporter, "write_export", wrong_model)
    with pytest.raises(verification.ExportError, match="missing"):
        exporter.publish(cfg, module, [])
    assert os.listdir(export_dir) == []
