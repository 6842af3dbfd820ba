"""gRPC serving: local server + client round trips, versions, bad inputs.

The fast tests serve a toy SavedModel built here with the four signatures
of the export contract (same names, input names and dtypes, in-graph
asserts), so the server and client are tested without a trained model:
    ctr = sigmoid(u + s_c - 1) on valid candidates, 0 on padding, where
    u = 0.01 Σ_valid (item % 7) + 0.1 gender + 0.05 age + 0.001 (user % 13)
        + 0.1 version,
    s_c = 0.02 (cand_item % 11) + 0.03 (cand_category % 5).
The slow test at the end exports the real model (hisac_tf.export).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from hisac_tf import config as config_lib
from hisac_tf.data import synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.request_values import (
    impression_examples,
    request_values,
)
from hisac_tf.export import exporter
from pipelines import tokenize_items, train
from serving import (
    grpc_client,
    load_test,
    local_server,
    prediction_handlers,
    tfrecord_requests,
    version_manager,
)
from serving.grpc_client import HisacClient, ServingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EXPORT = 8
SPEC = FeatureSpec(max_history=N_EXPORT, max_candidates=5)
STATE_SPECS = {
    "keys": tf.TensorSpec([None, None, None, None], tf.float32, "keys"),
    "values": tf.TensorSpec([None, None, None, None], tf.float32, "values"),
    "bias": tf.TensorSpec([None, None], tf.float32, "bias"),
    "mask": tf.TensorSpec([None, None], tf.bool, "mask"),
    "user_embedding": tf.TensorSpec([None, None], tf.float32,
                                    "user_embedding"),
    "model_fingerprint": tf.TensorSpec([None], tf.int64,
                                       "model_fingerprint"),
}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------- toy model
class ToyHisac(tf.Module):
    """The export's four signatures over a deterministic toy score."""

    def __init__(self, version):
        super().__init__()
        self.version = version
        self.max_history = tf.Variable(N_EXPORT, dtype=tf.int64,
                                       trainable=False)
        sig = SPEC.input_signature()
        cand = ("cand_item_ids", "cand_category_ids", "cand_count")
        user_sig = {k: v for k, v in sig.items() if k not in cand}
        cand_sig = {k: v for k, v in sig.items() if k in cand}
        self.serve = tf.function(self._serve, input_signature=[sig])
        self.encode = tf.function(self._encode, input_signature=[user_sig])
        self.score = tf.function(
            self._score, input_signature=[{**STATE_SPECS, **cand_sig}]
        )
        self.examples = tf.function(self._examples, input_signature=[
            tf.TensorSpec([None], tf.string, "examples")])

    def signatures(self):
        return {
            "serving_default": self.serve.get_concrete_function(),
            "encode_user": self.encode.get_concrete_function(),
            "score_with_state": self.score.get_concrete_function(),
            "predict_examples": self.examples.get_concrete_function(),
        }

    def _user_score(self, f):
        hist = f["hist_item_ids"]  # [R, N']
        checks = [
            tf.debugging.assert_less_equal(
                tf.shape(hist)[1], N_EXPORT,
                message=f"hist_item_ids is longer than the exported "
                f"N = {N_EXPORT}"),
            tf.debugging.assert_less_equal(
                f["hist_length"], tf.shape(hist)[1],
                message="hist_length exceeds the history width"),
        ]
        with tf.control_dependencies(checks):
            valid = tf.sequence_mask(f["hist_length"], tf.shape(hist)[1])
        items = tf.cast(tf.where(valid, hist % 7, 0), tf.float32)  # [R, N']
        return (0.01 * tf.reduce_sum(items, 1)
                + 0.1 * tf.cast(f["gender"], tf.float32)
                + 0.05 * tf.cast(f["age_bucket"], tf.float32)
                + 0.001 * tf.cast(f["user_id"] % 13, tf.float32)
                + 0.1 * self.version)  # [R]

    def _ctr(self, u, f):
        items, cats = f["cand_item_ids"], f["cand_category_ids"]  # [R, C]
        check = tf.debugging.assert_positive(
            f["cand_count"], message="cand_count must be >= 1")
        with tf.control_dependencies([check]):
            s = (0.02 * tf.cast(items % 11, tf.float32)
                 + 0.03 * tf.cast(cats % 5, tf.float32))  # [R, C]
        valid = tf.sequence_mask(f["cand_count"], tf.shape(items)[1])
        ctr = tf.sigmoid(u[:, None] + s - 1.0)  # [R, C]
        return tf.where(valid, ctr, 0.0)

    def _serve(self, f):
        return {"ctr": self._ctr(self._user_score(f), f)}

    def _encode(self, f):
        u = self._user_score(f)  # [R]
        r = tf.shape(u)[0]
        keys = tf.tile(u[:, None, None, None], [1, 2, 3, 4])  # [R, H, A, dk]
        return {
            "keys": keys,
            "values": -keys,
            "bias": tf.zeros([r, 3]),
            "mask": tf.ones([r, 3], tf.bool),
            "user_embedding": tf.stack([u, 2 * u], 1),  # [R, 2]
            "model_fingerprint": tf.fill([r], tf.constant(
                1000 + self.version, tf.int64)),
        }

    def _score(self, f):
        check = tf.debugging.assert_equal(
            f["model_fingerprint"], tf.constant(1000 + self.version,
                                                tf.int64),
            message="state comes from another model version "
            "(model_fingerprint)")
        with tf.control_dependencies([check]):
            u = tf.identity(f["keys"][:, 0, 0, 0])  # [R]
        return {"ctr": self._ctr(u, f)}

    def _examples(self, serialized):
        raw = SPEC.parse_impressions(serialized)
        f = dict(raw)
        f["hist_length"] = tf.cast(raw["hist_item_ids"].row_lengths(),
                                   tf.int32)
        for n in ("hist_item_ids", "hist_category_ids", "hist_behaviors",
                  "hist_timestamps"):
            f[n] = raw[n].to_tensor()
        f["cand_item_ids"] = raw["cand_item_id"][:, None]  # [B, 1]
        f["cand_category_ids"] = raw["cand_category_id"][:, None]
        f["cand_count"] = tf.ones_like(f["hist_length"])
        return {"ctr": self._ctr(self._user_score(f), f)[:, 0]}


def reference_ctr(f, version):
    """Numpy twin of the toy model."""
    n = f["hist_item_ids"].shape[1]
    valid = np.arange(n)[None] < f["hist_length"][:, None]
    u = (0.01 * np.where(valid, f["hist_item_ids"] % 7, 0).sum(1)
         + 0.1 * f["gender"] + 0.05 * f["age_bucket"]
         + 0.001 * (f["user_id"] % 13) + 0.1 * version)
    s = 0.02 * (f["cand_item_ids"] % 11) + 0.03 * (f["cand_category_ids"] % 5)
    ctr = 1.0 / (1.0 + np.exp(-(u[:, None] + s - 1.0)))
    cvalid = np.arange(s.shape[1])[None] < f["cand_count"][:, None]
    return np.where(cvalid, ctr, 0.0)


def make_request(r=3, n=N_EXPORT, c=4, seed=0):
    rng = np.random.default_rng(seed)
    f = load_test.random_request(SPEC, n, c, r, seed=seed)
    f["hist_length"] = rng.integers(0, n + 1, r).astype(np.int32)
    f["cand_count"] = rng.integers(1, c + 1, r).astype(np.int32)
    f["hist_length"][0] = n
    f["cand_count"][0] = c
    return f


def warmup_record(features):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hisac"
    for k, v in features.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(request)
    return log.SerializeToString()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Toy SavedModels of versions 1..3 (the 1st with warm-up records)."""
    root = tmp_path_factory.mktemp("store")
    for version in (1, 2, 3):
        module = ToyHisac(version)
        path = str(root / str(version))
        tf.saved_model.save(module, path, signatures=module.signatures())
        if version == 1:
            os.makedirs(os.path.join(path, "assets.extra"))
            warm = os.path.join(path, version_manager.WARMUP_FILE)
            with tf.io.TFRecordWriter(warm) as w:
                w.write(warmup_record(make_request(r=1)))
    return root


def publish(store, export_dir, version):
    """Copies a stored version in, atomically by rename (as the export)."""
    tmp = os.path.join(export_dir, f"tmp-{version}")
    shutil.copytree(os.path.join(store, str(version)), tmp)
    os.rename(tmp, os.path.join(export_dir, str(version)))


LABELS = """
model_config_list {
  config {
    name: "hisac"
    base_path: "/unused"
    model_platform: "tensorflow"
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"""


@pytest.fixture(scope="module")
def served(store, tmp_path_factory):
    """A server over versions 1 and 2, labels stable=1 and canary=2, and a
    1 MiB message limit."""
    export = tmp_path_factory.mktemp("export")
    for version in (1, 2):
        publish(store, str(export), version)
    (export / "models.config").write_text(LABELS)
    server, port = local_server.start_server(
        str(export), port=0, poll_s=0, max_message_mb=1)
    yield server, f"localhost:{port}"
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    with HisacClient(served[1], timeout_s=20) as c:
        yield c


# ---------------------------------------------------------- round trips
def test_predict_round_trip_matches_savedmodel_and_reference(
        served, client, store):
    f = make_request()
    ctr = client.predict(f)
    assert ctr.shape == (3, 4) and ctr.dtype == np.float32
    # Latest version (2) without a version or label.
    np.testing.assert_allclose(ctr, reference_ctr(f, 2), rtol=1e-5)
    loaded = tf.saved_model.load(str(store / "2"))
    direct = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in f.items()})["ctr"].numpy()
    np.testing.assert_array_equal(ctr, direct)


def test_two_step_equals_predict(client):
    f = make_request(seed=1)
    user, cands = grpc_client.split_request(f)
    state = client.encode_user(user)
    assert sorted(state) == sorted(STATE_SPECS)
    assert state["keys"].shape == (3, 2, 3, 4)
    assert state["mask"].dtype == bool
    np.testing.assert_array_equal(state["model_fingerprint"], [1002] * 3)
    np.testing.assert_array_equal(client.score_with_state(state, cands),
                                  client.predict(f))


def test_predict_examples_equals_predict(client):
    f = make_request(seed=2)
    per_request = impression_examples(f, SPEC)
    assert [len(e) for e in per_request] == list(f["cand_count"])
    flat = client.predict_examples(sum(per_request, []))
    ctr = client.predict(f)
    expected = np.concatenate(
        [ctr[r, :n] for r, n in enumerate(f["cand_count"])])
    np.testing.assert_allclose(flat, expected, rtol=1e-6)


def test_metadata_lists_signatures_and_status_available(client):
    meta = client.metadata()
    assert meta["_version"] == 2
    assert {"serving_default", "encode_user", "score_with_state",
            "predict_examples"} <= set(meta)
    inputs = meta["serving_default"]["inputs"]
    assert set(inputs) == set(SPEC.input_signature())
    assert inputs["hist_length"]["dtype"] == "int32"
    assert inputs["hist_item_ids"] == {"dtype": "int64", "shape": [-1, -1]}
    assert meta["serving_default"]["outputs"]["ctr"]["dtype"] == "float32"
    assert meta["predict_examples"]["inputs"]["examples"]["dtype"] == "string"
    status = client.status()
    assert [(s["version"], s["state"], s["error_code"]) for s in status] == [
        (1, "AVAILABLE", 0), (2, "AVAILABLE", 0)]


@pytest.mark.parametrize("kwargs, version", [
    pytest.param({}, 2, id="latest"),
    pytest.param({"version": 1}, 1, id="version-1"),
    pytest.param({"version_label": "stable"}, 1, id="label-stable"),
    pytest.param({"version_label": "canary"}, 2, id="label-canary"),
])
def test_version_and_label_selection(served, kwargs, version):
    f = make_request(seed=3)
    with HisacClient(served[1], timeout_s=20, **kwargs) as c:
        np.testing.assert_allclose(c.predict(f), reference_ctr(f, version),
                                   rtol=1e-5)
        assert c.metadata()["_version"] == version


@pytest.mark.parametrize("kwargs, text", [
    pytest.param({"version": 7}, "version 7 not found", id="version"),
    pytest.param({"version_label": "beta"}, "no version label 'beta'",
                 id="label"),
    pytest.param({"model_name": "other"}, "model 'other' not found",
                 id="model"),
])
def test_unknown_model_version_label_not_found(served, kwargs, text):
    with HisacClient(served[1], **kwargs) as c:
        with pytest.raises(ServingError, match=text) as e:
            c.predict(make_request())
        assert e.value.code == NOT_FOUND
        with pytest.raises(ServingError) as e:
            c.status()
        assert e.value.code == NOT_FOUND


def test_state_from_another_version_is_refused(served, client):
    f = make_request(seed=4)
    user, cands = grpc_client.split_request(f)
    with HisacClient(served[1], version=1) as v1:
        state = v1.encode_user(user)
    with pytest.raises(ServingError, match="another model version") as e:
        client.score_with_state(state, cands)  # Served by version 2.
    assert e.value.code == INVALID


# ------------------------------------------------------------ bad input
BAD_INPUTS = [
    pytest.param(
        "serving_default",
        lambda f: {**f, "hist_length": f["hist_length"].astype(np.int64)},
        INVALID, r"input 'hist_length': expected dtype int32, got int64",
        id="wrong-dtype"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "cand_item_ids": f["cand_item_ids"].astype(
            np.float32)},
        INVALID, r"'cand_item_ids': expected dtype int64, got float32",
        id="float-ids"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "user_id": f["user_id"][:, None]},
        INVALID, r"input 'user_id': expected rank 1 \(shape \[\?\]\), got "
        r"rank 2 \(shape \[3, 1\]\)", id="wrong-rank"),
    pytest.param(
        "serving_default",
        lambda f: {**f, **{k: np.pad(f[k], [(0, 0), (0, 2)]) for k in (
            "hist_item_ids", "hist_category_ids", "hist_behaviors",
            "hist_timestamps")}},
        INVALID, r"hist_item_ids is longer than the exported N = 8",
        id="history-longer-than-N"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "hist_length": f["hist_length"] + N_EXPORT},
        INVALID, r"input 'hist_length' must lie in \[0, 8\].* got 16 for "
        r"request 0", id="hist-length-too-big"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "cand_count": np.asarray([4, 5, 1], np.int32)},
        INVALID, r"input 'cand_count' must lie in \[1, 4\].* got 5 for "
        r"request 1", id="cand-count-too-big"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "cand_count": np.asarray([4, 0, 1], np.int32)},
        INVALID, r"input 'cand_count' must lie in \[1, 4\].* got 0",
        id="zero-candidates"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "cand_item_ids": f["cand_item_ids"][:, :0],
                   "cand_category_ids": f["cand_category_ids"][:, :0],
                   "cand_count": np.zeros(3, np.int32)},
        INVALID, r"input 'cand_item_ids' holds no candidates",
        id="empty-candidate-list"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "hist_behaviors": f["hist_behaviors"][:, :-1]},
        INVALID, r"input 'hist_behaviors' has shape \[3, 7\] but "
        r"'hist_item_ids' has \[3, 8\]", id="history-shapes-disagree"),
    pytest.param(
        "serving_default",
        lambda f: {**f, "gender": f["gender"][:2]},
        INVALID, r"input 'gender' has 2 requests", id="requests-disagree"),
    pytest.param(
        "serving_default",
        lambda f: {k: v for k, v in f.items() if k != "hist_timestamps"},
        INVALID, r"missing inputs \['hist_timestamps'\]",
        id="missing-input"),
    pytest.param(
        "serving_default", lambda f: {**f, "labels": f["cand_count"]},
        INVALID, r"unexpected inputs \['labels'\]", id="extra-input"),
    pytest.param(
        "no_such_signature", lambda f: f, NOT_FOUND,
        r"signature 'no_such_signature' not found", id="unknown-signature"),
    # The value rules of hisac_tf.export.input_contract (the graph's own).
    pytest.param(
        "serving_default", lambda f: set_entry(f, "hist_item_ids", 0, 2, 0),
        INVALID, r"input 'hist_item_ids': hist_item_ids must be >= 1 in the "
        r"first hist_length entries .* got 0 at request 0, position 2",
        id="padding-id-within-history"),
    pytest.param(
        "serving_default",
        lambda f: set_entry(f, "cand_category_ids", 0, 1, -3), INVALID,
        r"input 'cand_category_ids': cand_category_ids must be >= 0; got -3 "
        r"at request 0, position 1", id="negative-category"),
    pytest.param(
        "serving_default", lambda f: {**f, "gender": -f["gender"]}, INVALID,
        r"input 'gender': gender must be >= 0; got -\d+ at request 0",
        id="negative-user-feature"),
    pytest.param(
        "serving_default",
        lambda f: set_entry(f, "hist_timestamps", 0, N_EXPORT - 1,
                            int(f["request_time"][0]) + 1), INVALID,
        r"hist_timestamps must be <= request_time; got \d+ at request 0, "
        rf"position {N_EXPORT - 1}", id="timestamp-after-request"),
    pytest.param(
        "serving_default",
        lambda f: set_entry(f, "hist_timestamps", 0, 0,
                            int(f["request_time"][0])), INVALID,
        r"hist_timestamps must be sorted oldest first; got \d+ at request 0, "
        r"position 1", id="timestamps-unsorted"),
    pytest.param(
        "encode_user",
        lambda f: set_entry(grpc_client.split_request(f)[0],
                            "hist_behaviors", 0, 0, -1), INVALID,
        r"input 'hist_behaviors': hist_behaviors must be >= 0; got -1",
        id="encode-user-negative-behaviour"),
]


def set_entry(f, name, row, col, value):
    """A copy of request `f` with f[name][row, col] = value."""
    out = {k: np.array(v) for k, v in f.items()}
    out[name][row, col] = value
    return out


@pytest.mark.parametrize("signature, edit, code, message", BAD_INPUTS)
def test_bad_input_gets_clear_error(client, signature, edit, code, message):
    f = make_request()
    with pytest.raises(ServingError, match=message) as e:
        client.run(signature, edit(f))
    assert e.value.code == code
    # The server survives and still scores good requests.
    np.testing.assert_allclose(client.predict(f), reference_ctr(f, 2),
                               rtol=1e-5)


def test_values_past_the_counts_are_padding(client):
    """The contract's rules hold within hist_length / cand_count only."""
    f = make_request(seed=6)
    f["hist_length"][1], f["cand_count"][1] = 2, 1
    bad = {k: np.array(v) for k, v in f.items()}
    for name in ("hist_item_ids", "hist_category_ids", "hist_behaviors"):
        bad[name][1, 2:] = -7
    bad["hist_timestamps"][1, 2:] = bad["request_time"][1] + 99
    for name in ("cand_item_ids", "cand_category_ids"):
        bad[name][1, 1:] = -7
    np.testing.assert_allclose(client.predict(bad), reference_ctr(f, 2),
                               rtol=1e-5)


def test_malformed_tensor_proto_is_refused(client):
    f = make_request()
    inputs = dict(f)
    proto = tf.make_tensor_proto(f["user_id"])
    proto.tensor_content = proto.tensor_content[:-8]  # 2 values for [3].
    inputs["user_id"] = proto
    with pytest.raises(ServingError, match="'user_id': holds 2 values but "
                       r"its shape \[3\] has 3 elements") as e:
        client.run("serving_default", inputs)
    assert e.value.code == INVALID


def test_oversized_message_is_refused_and_server_survives(client):
    f = make_request(r=1)
    f = {**f, **{k: np.ones([1, 200_000], np.int64) for k in (
        "hist_item_ids", "hist_category_ids", "hist_behaviors",
        "hist_timestamps")}}  # 6.4 MB > the server's 1 MiB.
    with pytest.raises(ServingError) as e:
        client.predict(f)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in e.value.details
    g = make_request()
    np.testing.assert_allclose(client.predict(g), reference_ctr(g, 2),
                               rtol=1e-5)


def test_client_refuses_non_integer_features(client):
    f = make_request()
    with pytest.raises(ValueError, match="'gender' must hold integers"):
        client.predict({**f, "gender": f["gender"] + 0.5})
    with pytest.raises(ValueError, match="missing 'cand_count'"):
        client.predict({k: v for k, v in f.items() if k != "cand_count"})


# ------------------------------------------------------- version pickup
def test_new_version_and_labels_are_picked_up(store, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    publish(store, str(export), 1)
    server, port = local_server.start_server(str(export), poll_s=0.1)
    try:
        f = make_request(seed=5)
        with HisacClient(f"localhost:{port}", timeout_s=20) as c:
            np.testing.assert_allclose(c.predict(f), reference_ctr(f, 1),
                                       rtol=1e-5)
            # An incomplete directory (no saved_model.pb) is not a version.
            (export / "5").mkdir()
            # A corrupt version is reported and does not stop the others.
            (export / "4").mkdir()
            (export / "4" / "saved_model.pb").write_bytes(b"not a proto")
            publish(store, str(export), 2)
            server.wait_for_version(2, timeout_s=30)
            np.testing.assert_allclose(c.predict(f), reference_ctr(f, 2),
                                       rtol=1e-5)
            status = {s["version"]: s for s in c.status()}
            assert status[1]["state"] == status[2]["state"] == "AVAILABLE"
            assert status[4]["state"] == "END"
            assert "saved_model.pb" in status[4]["error_message"]
            assert 5 not in status
            # keep_versions = 2: version 3 arriving unloads version 1.
            publish(store, str(export), 3)
            server.wait_for_version(3, timeout_s=30)
            deadline = time.monotonic() + 10
            while 1 in server.registry.versions():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert server.registry.versions() == [2, 3]
            # A label file appearing later is read at the next poll.
            (export / "models.config").write_text(LABELS)
            deadline = time.monotonic() + 10
            while server.registry.labels().get("canary") != 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with HisacClient(f"localhost:{port}",
                             version_label="stable") as s:
                server.wait_for_version(1, timeout_s=30)  # Labelled: kept.
                np.testing.assert_allclose(
                    s.predict(f), reference_ctr(f, 1), rtol=1e-5)
    finally:
        server.stop()


def test_no_version_yet_is_unavailable(tmp_path):
    server, port = local_server.start_server(str(tmp_path), poll_s=0)
    try:
        with HisacClient(f"localhost:{port}", retries=0) as c:
            with pytest.raises(ServingError, match="no version loaded") as e:
                c.predict(make_request())
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(ServingError, match="not ready after") as e:
                c.wait_until_ready(timeout_s=0.5)
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


# -------------------------------------------------------------- retries
class FlakyServicer(prediction_handlers.PredictionServicer):
    """Answers UNAVAILABLE to the first `failures` Predict calls."""

    def __init__(self, registry, failures):
        super().__init__(registry)
        self.failures = failures
        self.calls = 0

    def Predict(self, request, context):
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return super().Predict(request, context)


@pytest.fixture
def flaky(store, tmp_path):
    publish(store, str(tmp_path), 1)
    registry = version_manager.ModelRegistry(str(tmp_path))
    registry.refresh()
    servicer = FlakyServicer(registry, failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        prediction_handlers.ModelServicer(registry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"localhost:{port}"
    server.stop(None)


def test_retries_on_unavailable_only(flaky):
    servicer, target = flaky
    f = make_request()
    with HisacClient(target, retries=0) as c:
        with pytest.raises(ServingError, match="warming up") as e:
            c.predict(f)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 1
    with HisacClient(target, retries=3, backoff_s=0.01) as c:
        np.testing.assert_allclose(c.predict(f), reference_ctr(f, 1),
                                   rtol=1e-5)
        assert servicer.calls == 3  # Failed, retried, answered.
        with pytest.raises(ServingError) as e:
            c.run("serving_default", {"user_id": f["user_id"]})
        assert e.value.code == INVALID
        assert servicer.calls == 4  # INVALID_ARGUMENT is not retried.


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_waits_for_a_server_that_starts_later(store, tmp_path):
    publish(store, str(tmp_path), 1)
    port = _free_port()
    f = make_request()
    result = {}

    def call():
        with HisacClient(f"localhost:{port}", retries=8,
                         backoff_s=0.1, timeout_s=20) as c:
            try:
                result["ctr"] = c.predict(f)
            except Exception as e:
                result["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    server, _ = local_server.start_server(str(tmp_path), port=port, poll_s=0)
    try:
        thread.join(60)
        assert "error" not in result, result.get("error")
        np.testing.assert_allclose(result["ctr"], reference_ctr(f, 1),
                                   rtol=1e-5)
    finally:
        server.stop()


# ------------------------------------------------------------- requests
def test_json_and_tfrecord_requests_give_the_same_scores(client, tmp_path):
    spec = FeatureSpec(max_history=4, max_candidates=5)
    request = {"user_id": 7, "request_time": 100, "gender": 1,
               "age_bucket": 3,
               "hist_item_ids": [5, 6, 7, 8, 9, 10],
               "hist_category_ids": [1, 1, 2, 2, 3, 3],
               "hist_behaviors": [1, 2, 1, 2, 1, 2],
               "hist_timestamps": [10, 20, 30, 40, 50, 60],
               "cand_item_ids": [11, 12, 13], "cand_category_ids": [1, 2, 3]}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    from_json = tfrecord_requests.load_request(str(path), spec)
    # The newest N = 4 items are kept, as in training.
    np.testing.assert_array_equal(from_json["hist_item_ids"],
                                  [[7, 8, 9, 10]])
    assert from_json["hist_length"].tolist() == [4]
    assert from_json["cand_count"].tolist() == [3]
    record = tmp_path / "requests.tfrecord.gz"
    with tf.io.TFRecordWriter(str(record), "GZIP") as w:
        example = spec.to_example({**request, "labels": [0, 1, 0]})
        w.write(example.SerializeToString())
    from_file = tfrecord_requests.load_request(str(record), spec)
    assert from_file["cand_item_ids"].shape == (1, 5)  # Padded to C.
    np.testing.assert_allclose(client.predict(from_file)[:, :3],
                               client.predict(from_json), rtol=1e-6)
    with pytest.raises(ValueError, match="equal lengths"):
        grpc_client.request_from_dict(
            {**request, "cand_category_ids": [1]}, spec)
    with pytest.raises(ValueError, match="'hist_item_ids' must hold integ"):
        grpc_client.request_from_dict(
            {**request, "hist_item_ids": [1.5] * 6}, spec)


def test_request_values_cut_rows_to_their_lengths():
    f = make_request(r=2, n=4, c=3)
    f["hist_length"][1], f["cand_count"][1] = 2, 1
    values = request_values(f, 1)
    assert values["hist_item_ids"] == f["hist_item_ids"][1, :2].tolist()
    assert values["cand_category_ids"] == [int(f["cand_category_ids"][1, 0])]
    assert values["user_id"] == int(f["user_id"][1])
    assert [len(e) for e in impression_examples(f, SPEC)] == [3, 1]
    with pytest.raises(IndexError, match="row 2 is outside the 2 rows"):
        request_values(f, 2)


# -------------------------------------------------------- load test, CLI
def test_load_test_reports_qps_and_latency(served):
    f = make_request(r=1)
    report = load_test.run_load_test(
        served[1], f, concurrency=2, duration_s=1.0,
        warmup_s=0.2)
    assert report["calls"] > 0 and report["errors"] == {}
    assert 1.0 <= report["elapsed_s"] < 5.0
    assert report["qps"] == pytest.approx(
        report["calls"] / report["elapsed_s"])
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    bad = load_test.run_load_test(
        served[1], f, concurrency=1, duration_s=0.5,
        warmup_s=0.0, version=99)
    assert bad["calls"] == 0 and bad["errors"]["NOT_FOUND"] > 0


def test_command_lines_serve_and_score(store, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    publish(store, str(export), 1)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve",
         f"--server_export_dir={export}", f"--server_port={port}",
         "--server_host=127.0.0.1", "--server_poll_s=0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        request = {"user_id": 3, "request_time": 100, "gender": 2,
                   "age_bucket": 1, "hist_item_ids": [4, 5],
                   "hist_category_ids": [1, 1], "hist_behaviors": [1, 1],
                   "hist_timestamps": [10, 20], "cand_item_ids": [6, 7, 8],
                   "cand_category_ids": [2, 2, 3]}
        path = tmp_path / "request.json"
        path.write_text(json.dumps(request))
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.score",
             f"--client_target=localhost:{port}",
             f"--client_request={path}", "--client_two_step",
             "--client_retries=40", "--client_timeout_s=30"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["mode"] == "encode_user+score_with_state"
        f = grpc_client.request_from_dict(request, SPEC)
        np.testing.assert_allclose(result["ctr"], reference_ctr(f, 1),
                                   rtol=1e-5)
    finally:
        server.terminate()
        server.wait(30)


# ------------------------------------------------------------ real export
@pytest.mark.slow
def test_real_export_round_trip_and_version_pickup(tmp_path):
    """Tiny model -> exporter -> local server -> client."""
    root = str(tmp_path)
    cfg = config_lib.load_config("tiny", [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={root}/model",
        f"export.export_dir={root}/export",
        "training.train_steps=4", "training.checkpoint_every=4",
        "training.log_every=4",
    ])
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    train.main(cfg, progress=False)
    assert exporter.export_model(cfg, progress=False)["version"] == 1
    spec = FeatureSpec.from_config(cfg.data)
    batch = {k: v.numpy() for k, v in exporter.first_batch(cfg, spec, 4).items()
             if k in spec.input_signature()}
    server, port = local_server.start_server(cfg.export.export_dir,
                                             poll_s=0.2)
    try:
        target = f"localhost:{port}"
        with HisacClient(target, timeout_s=30) as c:
            loaded = tf.saved_model.load(f"{root}/export/1")
            direct = loaded.signatures["serving_default"](
                **{k: tf.constant(v) for k, v in batch.items()})
            ctr = c.predict(batch)
            np.testing.assert_array_equal(ctr, direct["ctr"].numpy())
            user, cands = grpc_client.split_request(batch)
            state_v1 = c.encode_user(user)
            assert state_v1["mask"].dtype == np.int32
            np.testing.assert_allclose(c.score_with_state(state_v1, cands),
                                       ctr, atol=1e-6)
            flat = c.predict_examples(
                sum(impression_examples(batch, spec), []))
            np.testing.assert_allclose(
                flat, ctr[np.arange(ctr.shape[1])[None]
                          < batch["cand_count"][:, None]], atol=1e-6)
            meta = c.metadata()
            assert {"serving_default", "encode_user", "score_with_state",
                    "predict_examples"} <= set(meta)
            # The graph's own checks come back as INVALID_ARGUMENT.
            bad = {**batch, "hist_item_ids": batch["hist_item_ids"].copy()}
            bad["hist_item_ids"][0, 0] = 0
            with pytest.raises(ServingError, match="hist_item_ids must be "
                               ">= 1") as e:
                c.predict(bad)
            assert e.value.code == INVALID

            # A second export is picked up; labels follow its models.config.
            assert exporter.export_model(cfg, progress=False)["version"] == 2
            server.wait_for_version(2, timeout_s=60)
            assert c.metadata()["_version"] == 2
            with pytest.raises(ServingError, match="model_fingerprint") as e:
                c.score_with_state(state_v1, cands)
            assert e.value.code == INVALID
            np.testing.assert_allclose(
                c.score_with_state(c.encode_user(user), cands),
                c.predict(batch), atol=1e-6)
        for label, version in (("stable", 1), ("canary", 2)):
            with HisacClient(target, version_label=label) as c:
                assert c.metadata()["_version"] == version
        with HisacClient(target, version=1) as c:
            np.testing.assert_array_equal(c.predict(batch), ctr)
    finally:
        server.stop()
