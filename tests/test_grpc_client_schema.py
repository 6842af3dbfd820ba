"""The gRPC client builds requests from the served model's metadata.

Toy SavedModels (tf.Module, signatures from an input-signature dict)
served by `serving.local_server`: one for a FeatureSpec that is not the
DataConfig default (other user features, N, C), one whose signature has
string, float and rank-3 inputs. The client, `hisac-score` and the load
test read names, dtypes and shapes from GetModelMetadata only. Toy score:
    ctr = sigmoid(u + s - 1) on valid candidates, 0 on padding, where
    u = 0.001 (user_id % 13) + Σ int user features 0.01 (x % 7)
        + Σ float ones 0.1 x + Σ string ones 0.05 len(x)
        + 0.01 Σ_valid (hist_item_ids % 7) + 0.001 Σ_valid hist_tags,
    s = 0.02 (cand_item_ids % 11) + Σ other int cand inputs 0.03 (x % 5)
        + Σ float ones 0.3 x + Σ string ones 0.04 len(x).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.config import DataConfig
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.request_values import impression_examples
from serving import load_test, local_server, request_loading
from serving.grpc_client import HisacClient, ServingError
from serving.grpc_client import impression_examples as examples_from_schema
from serving.model_schema import InputSpec, ModelSchema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = ("hist_length", "cand_count")
# Not the DataConfig defaults: other user features, N and C.
OTHER_SPEC = FeatureSpec(max_history=3, max_candidates=2,
                         user_features=("city", "device_type"))


def features_signature() -> dict:
    """An export with string, float and rank-3 inputs."""
    def spec(shape, dtype, name):
        return tf.TensorSpec(shape, dtype, name)
    return {
        "user_id": spec([None], tf.int64, "user_id"),
        "device": spec([None], tf.string, "device"),
        "user_spend": spec([None], tf.float32, "user_spend"),
        "hist_item_ids": spec([None, None], tf.int64, "hist_item_ids"),
        "hist_tags": spec([None, None, None], tf.int64, "hist_tags"),
        "hist_length": spec([None], tf.int32, "hist_length"),
        "cand_item_ids": spec([None, None], tf.int64, "cand_item_ids"),
        "cand_price": spec([None, None], tf.float32, "cand_price"),
        "cand_brand": spec([None, None], tf.string, "cand_brand"),
        "cand_count": spec([None], tf.int32, "cand_count"),
    }


class SchemaToy(tf.Module):
    """serving_default, encode_user and score_with_state over any input
    signature (the toy score of the module docstring)."""

    def __init__(self, signature: dict, version: int = 1):
        super().__init__()
        self.version = version
        cand = {k: v for k, v in signature.items() if k.startswith("cand_")}
        user = {k: v for k, v in signature.items() if k not in cand}
        self.user_names = tuple(user)
        self.serve = tf.function(self._serve, input_signature=[signature])
        self.encode = tf.function(self._encode, input_signature=[user])
        state = {"u": tf.TensorSpec([None], tf.float32, "u")}
        self.score = tf.function(self._score,
                                 input_signature=[{**state, **cand}])

    def signatures(self):
        return {
            "serving_default": self.serve.get_concrete_function(),
            "encode_user": self.encode.get_concrete_function(),
            "score_with_state": self.score.get_concrete_function(),
        }

    def _user(self, f):
        u = 0.001 * tf.cast(f["user_id"] % 13, tf.float32)  # [R]
        for name in self.user_names:
            x = f[name]
            if name in ("user_id", "hist_length") or x.shape.rank != 1:
                continue
            if x.dtype == tf.string:
                u += 0.05 * tf.cast(tf.strings.length(x), tf.float32)
            elif x.dtype.is_floating:
                u += 0.1 * x
            else:
                u += 0.01 * tf.cast(x % 7, tf.float32)
        hist = f["hist_item_ids"]  # [R, N']
        valid = tf.sequence_mask(f["hist_length"], tf.shape(hist)[1])
        u += 0.01 * tf.reduce_sum(
            tf.cast(tf.where(valid, hist % 7, 0), tf.float32), 1)
        if "hist_tags" in f:
            tags = tf.reduce_sum(f["hist_tags"], 2)  # [R, N']
            u += 0.001 * tf.reduce_sum(
                tf.cast(tf.where(valid, tags, 0), tf.float32), 1)
        return u

    def _ctr(self, u, f):
        items = f["cand_item_ids"]  # [R, C]
        s = 0.02 * tf.cast(items % 11, tf.float32)
        for name, x in sorted(f.items()):
            if not name.startswith("cand_") or name in (
                    "cand_item_ids", "cand_count"):
                continue
            if x.dtype == tf.string:
                s += 0.04 * tf.cast(tf.strings.length(x), tf.float32)
            elif x.dtype.is_floating:
                s += 0.3 * x
            else:
                s += 0.03 * tf.cast(x % 5, tf.float32)
        valid = tf.sequence_mask(f["cand_count"], tf.shape(items)[1])
        return tf.where(valid, tf.sigmoid(u[:, None] + s - 1.0), 0.0)

    def _serve(self, f):
        return {"ctr": self._ctr(self._user(f), f)}

    def _encode(self, f):
        return {"u": self._user(f)}

    def _score(self, f):
        return {"ctr": self._ctr(f["u"], f)}


def reference_ctr(f):
    """Numpy twin of SchemaToy."""
    def strlen(x):
        return np.vectorize(len, otypes=[np.float64])(x)

    u = 0.001 * (f["user_id"] % 13)
    s = 0.02 * (f["cand_item_ids"] % 11)
    for name, x in f.items():
        if name in ("user_id", "cand_item_ids") + COUNTS:
            continue
        cand = name.startswith("cand_")
        if x.ndim != (2 if cand else 1):
            continue
        if x.dtype == object:
            part = (0.04 if cand else 0.05) * strlen(x)
        elif x.dtype.kind == "f":
            part = (0.3 if cand else 0.1) * x
        else:
            part = 0.03 * (x % 5) if cand else 0.01 * (x % 7)
        if cand:
            s = s + part
        else:
            u = u + part
    n = f["hist_item_ids"].shape[1]
    valid = np.arange(n)[None] < f["hist_length"][:, None]
    u = u + 0.01 * np.where(valid, f["hist_item_ids"] % 7, 0).sum(1)
    if "hist_tags" in f:
        u = u + 0.001 * np.where(valid, f["hist_tags"].sum(2), 0).sum(1)
    ctr = 1.0 / (1.0 + np.exp(-(u[:, None] + s - 1.0)))
    cvalid = (np.arange(s.shape[1])[None] < f["cand_count"][:, None])
    return np.where(cvalid, ctr, 0.0)


def save_toy(path, signature, version=1):
    module = SchemaToy(signature, version)
    tf.saved_model.save(module, str(path), signatures=module.signatures())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Toy SavedModels: 'other' (OTHER_SPEC), 'features' (string, float,
    rank 3)."""
    root = tmp_path_factory.mktemp("schema_exports")
    save_toy(root / "other", OTHER_SPEC.input_signature())
    save_toy(root / "features", features_signature())
    return root


def serve(exports, tmp_path, *names, poll_s=0.0):
    """A local server over the named toy exports as versions 1, 2, ..."""
    export = tmp_path / "export"
    export.mkdir()
    for version, name in enumerate(names, 1):
        shutil.copytree(exports / name, export / str(version))
    server, port = local_server.start_server(str(export), poll_s=poll_s)
    return server, f"localhost:{port}", export


FEATURE_REQUESTS = [
    {"user_id": 5, "device": "mobile", "user_spend": 2.5,
     "hist_item_ids": [3, 4, 5], "hist_tags": [[1, 2], [], [7]],
     "cand_item_ids": [8, 9], "cand_price": [1.5, 0.25],
     "cand_brand": ["acme", "zeta co"]},
    {"user_id": 12, "device": "desktop", "user_spend": 0,
     "hist_item_ids": [6], "hist_tags": [[1, 1, 1]],
     "cand_item_ids": [10], "cand_price": [3], "cand_brand": ["b"]},
]


# ----------------------------------------------------- against a server
def test_client_follows_an_export_that_is_not_the_default(
        exports, tmp_path):
    defaults = DataConfig()
    assert tuple(defaults.user_features) != OTHER_SPEC.user_features
    server, target, _ = serve(exports, tmp_path, "other")
    try:
        with HisacClient(target, timeout_s=20) as c:
            schema = c.schema()
            assert schema.version == 1
            assert set(schema.request_inputs) == set(
                OTHER_SPEC.input_signature())
            assert {g.count for g in schema.groups} == set(COUNTS)
            # Random valid inputs for every input of the signature.
            f = load_test.random_request(schema, 3, 2, requests=4, seed=1)
            assert set(f) == set(schema.request_inputs)
            assert f["city"].min() >= 1 and f["hist_length"].dtype == np.int32
            ctr = c.predict(f)
            np.testing.assert_allclose(ctr, reference_ctr(f), rtol=1e-5)
            user, cands = c.split_request(f)
            assert "city" in user and "cand_item_ids" in cands
            np.testing.assert_allclose(
                c.score_with_state(c.encode_user(user), cands), ctr,
                rtol=1e-6)
            # A JSON request of this export's fields.
            request = {"user_id": 7, "request_time": 100, "city": 4,
                       "device_type": 2, "hist_item_ids": [1, 2, 3, 4],
                       "hist_category_ids": [1, 1, 2, 2],
                       "hist_behaviors": [1, 1, 1, 2],
                       "hist_timestamps": [10, 20, 30, 40],
                       "cand_item_ids": [5, 6],
                       "cand_category_ids": [3, 3]}
            g = request_loading.request_from_dict(request, schema)
            assert g["hist_length"].tolist() == [4]  # No N in metadata.
            np.testing.assert_allclose(c.predict(g), reference_ctr(g),
                                       rtol=1e-5)
            cut = request_loading.request_from_dict(
                request, schema.with_max_history(3))
            assert cut["hist_item_ids"].tolist() == [[2, 3, 4]]
            # The default config's fields are named as unknown.
            with pytest.raises(ValueError, match=r"\['age_bucket', "
                               r"'gender'\] that the model \(version 1\) "
                               "does not take"):
                request_loading.request_from_dict(
                    {**request, "gender": 1, "age_bucket": 2}, schema)
            report = load_test.run_load_test(
                target, f, mode="two_step", concurrency=1, duration_s=0.3,
                warmup_s=0.0)
            assert report["calls"] > 0 and report["errors"] == {}
    finally:
        server.stop()


def test_string_float_and_rank3_inputs_are_scored(exports, tmp_path):
    server, target, _ = serve(exports, tmp_path, "features")
    try:
        with HisacClient(target, timeout_s=20) as c:
            meta = c.metadata()["serving_default"]["inputs"]
            assert meta["device"]["dtype"] == "string"
            assert meta["cand_price"]["dtype"] == "float32"
            path = tmp_path / "requests.json"
            path.write_text(json.dumps(FEATURE_REQUESTS))
            f = request_loading.request_from_json(str(path), c.schema())
            assert f["device"].tolist() == [b"mobile", b"desktop"]
            assert f["cand_price"].dtype == np.float32
            assert f["cand_brand"].tolist() == [[b"acme", b"zeta co"],
                                                [b"b", b""]]
            assert f["hist_tags"].shape == (2, 3, 3)  # Padded both ways.
            assert f["hist_tags"][0].tolist() == [[1, 2, 0], [0, 0, 0],
                                                  [7, 0, 0]]
            assert f["hist_length"].tolist() == [3, 1]
            assert f["cand_count"].tolist() == [2, 1]
            ctr = c.predict(f)
            np.testing.assert_allclose(ctr, reference_ctr(f), rtol=1e-5)
            assert ctr[1, 1] == 0.0  # Padding.
            user, cands = c.split_request(f)
            np.testing.assert_allclose(
                c.score_with_state(c.encode_user(f), cands), ctr, rtol=1e-6)
            # Random valid inputs for strings, floats and rank 3 too.
            g = load_test.random_request(c.schema(), 4, 3, 2, seed=3)
            assert g["device"].dtype == object and g["hist_tags"].ndim == 3
            np.testing.assert_allclose(c.predict(g), reference_ctr(g),
                                       rtol=1e-5)
            # Padded features are checked against the metadata's dtypes.
            with pytest.raises(ValueError, match="'cand_price' must hold "
                               "numbers"):
                c.predict({**f, "cand_price": f["cand_brand"]})
            with pytest.raises(ValueError, match="'device' must hold "
                               "strings"):
                c.predict({**f, "device": f["user_id"]})
            with pytest.raises(ValueError, match=r"hold \['brand'\], which "
                               "the model"):
                c.predict({**f, "brand": f["device"]})
    finally:
        server.stop()


def test_a_new_version_with_other_inputs_is_followed(exports, tmp_path):
    """Metadata is cached per version; a version with other inputs is
    read again when a call fails on the cached one."""
    server, target, export = serve(exports, tmp_path, "other", poll_s=0.1)
    try:
        with HisacClient(target, timeout_s=20) as c:
            f = load_test.random_request(c.schema(), 3, 2, 2, seed=4)
            np.testing.assert_allclose(c.predict(f), reference_ctr(f),
                                       rtol=1e-5)
            shutil.copytree(exports / "features", export / "tmp")
            os.rename(export / "tmp", export / "2")
            server.wait_for_version(2, timeout_s=30)
            g = load_test.random_request(
                ModelSchema.from_metadata(c.metadata()), 3, 2, 2, seed=5)
            assert c.schema().version == 1  # Cached until a call fails.
            np.testing.assert_allclose(c.predict(g), reference_ctr(g),
                                       rtol=1e-5)
            assert c.schema().version == 2
        with HisacClient(target, version=1) as pinned:
            with pytest.raises(ValueError, match="does not take"):
                pinned.predict(g)  # A pinned version is not re-read.
            np.testing.assert_allclose(pinned.predict(f), reference_ctr(f),
                                       rtol=1e-5)
    finally:
        server.stop()


def test_score_command_reads_the_inputs_from_the_server(exports, tmp_path):
    """hisac-score with the default --config scores an export whose
    inputs are not the config's."""
    server, target, _ = serve(exports, tmp_path, "features")
    try:
        path = tmp_path / "request.json"
        path.write_text(json.dumps(FEATURE_REQUESTS[0]))
        env = {**os.environ, "PYTHONPATH": ROOT}
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.score",
             f"--client_target={target}", f"--client_request={path}",
             "--client_two_step", "--client_timeout_s=30"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        f = request_loading.request_from_dict(
            FEATURE_REQUESTS[0], ModelSchema.from_metadata(
                {"serving_default": {"inputs": {
                    k: {"dtype": v.dtype.name, "shape": v.shape.as_list()}
                    for k, v in features_signature().items()}}}))
        np.testing.assert_allclose(result["ctr"], reference_ctr(f),
                                   rtol=1e-5)
        assert result["cand_item_ids"] == [[8, 9]]
        bad = tmp_path / "truncated.json"
        bad.write_text(json.dumps(FEATURE_REQUESTS[0])[:40])
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.score",
             f"--client_target={target}", f"--client_request={bad}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode != 0
        assert f"{bad}: not a valid JSON request" in out.stderr
    finally:
        server.stop()


@pytest.mark.slow
def test_loadtest_command_synthesises_inputs_from_the_server(
        exports, tmp_path):
    server, target, _ = serve(exports, tmp_path, "features")
    try:
        report_path = tmp_path / "load.json"
        env = {**os.environ, "PYTHONPATH": ROOT}
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.load_test",
             f"--load_target={target}", "--load_history=5",
             "--load_candidates=3", "--load_concurrency=1",
             "--load_duration_s=0.5", "--load_warmup_s=0",
             f"--load_output={report_path}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(report_path.read_text())
        assert report["calls"] > 0 and report["errors"] == {}
        assert report["candidates_per_call"] == 3
    finally:
        server.stop()


# ------------------------------------------------- requests, offline
def feature_schema() -> ModelSchema:
    return ModelSchema.from_metadata({"_version": 3, "serving_default": {
        "inputs": {k: {"dtype": v.dtype.name,
                       "shape": [-1] * v.shape.rank}
                   for k, v in features_signature().items()}}})


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda r: {**r, "brand": "x"},
                 r"request has field\(s\) \['brand'\] that the model "
                 r"\(version 3\) does not take", id="unknown-field"),
    pytest.param(lambda r: {k: v for k, v in r.items() if k != "device"},
                 r"request is missing field 'device' \(string \[R\]\)",
                 id="missing-field"),
    pytest.param(lambda r: {**r, "user_spend": "high"},
                 r"field 'user_spend' must hold number values \(float32\), "
                 r"got 'high'", id="string-for-float"),
    pytest.param(lambda r: {**r, "device": 3},
                 r"field 'device' must hold string values", id="int-for-str"),
    pytest.param(lambda r: {**r, "user_id": 1.5},
                 r"field 'user_id' must hold integer values", id="float-id"),
    pytest.param(lambda r: {**r, "user_id": True},
                 r"field 'user_id' must hold integer values", id="bool-id"),
    pytest.param(lambda r: {**r, "cand_brand": "acme"},
                 r"field 'cand_brand' must be a list of strings \(string "
                 r"\[R, X\]\), got 'acme'",
                 id="scalar-for-list"),
    pytest.param(lambda r: {**r, "hist_tags": [1, 2, 3]},
                 r"field 'hist_tags' must be a list of lists of integers "
                 r"\(int64 \[R, X, Y\]\), got 1 at \[0\]",
                 id="flat-for-rank3"),
    pytest.param(lambda r: {**r, "cand_price": [1.0]},
                 r"lists counted by 'cand_count' must have equal lengths, "
                 r"got \{'cand_item_ids': 2, 'cand_price': 1, "
                 r"'cand_brand': 2\}", id="unequal-lengths"),
    pytest.param(lambda r: {**r, "hist_length": 2},
                 r"field 'hist_length' is 2 but its lists have 3 entries",
                 id="wrong-count"),
    pytest.param(lambda r: {**r, "user_id": 2 ** 70},
                 r"field 'user_id' holds \d+, outside int64",
                 id="out-of-range"),
])
def test_bad_request_fields_are_named(edit, message):
    with pytest.raises(ValueError, match=message):
        request_loading.request_from_dict(edit(FEATURE_REQUESTS[0]),
                                          feature_schema())


def test_request_files_that_cannot_be_read_are_named(tmp_path):
    schema = feature_schema()
    text = json.dumps(FEATURE_REQUESTS)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{truncated}: not a valid JSON "
                       r"request \(.* line 1, column \d+; is the file "
                       "truncated"):
        request_loading.request_from_json(str(truncated), schema)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"user_id": \xff}')
    with pytest.raises(ValueError, match=rf"{binary}: .* not UTF-8"):
        request_loading.request_from_json(str(binary), schema)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3")
    with pytest.raises(ValueError, match=rf"{scalar}: expected one JSON "
                       "object"):
        request_loading.request_from_json(str(scalar), schema)
    second = tmp_path / "second.json"
    second.write_text(json.dumps(
        [FEATURE_REQUESTS[0], {**FEATURE_REQUESTS[1], "x": 1}]))
    with pytest.raises(ValueError, match=rf"{second}: request 1 has "
                       r"field\(s\) \['x'\]"):
        request_loading.request_from_json(str(second), schema)
    with pytest.raises(FileNotFoundError, match="no such request file"):
        request_loading.request_from_json(str(tmp_path / "no.json"), schema)


def test_input_spec_converts_by_dtype():
    ids = InputSpec("ids", "int32", (None, None))
    assert ids.convert(np.asarray([[1, 2]])).dtype == np.int32
    with pytest.raises(ValueError, match="outside int32"):
        ids.convert(np.asarray([[2 ** 40]]))
    with pytest.raises(ValueError, match=r"rank 2 \(shape \[R, X\]\)"):
        ids.convert(np.asarray([1, 2]))
    text = InputSpec("text", "string", (None,))
    assert text.convert(np.asarray(["é", "b"])).tolist() == [
        "é".encode(), b"b"]
    assert text.convert([b"a"]).tolist() == [b"a"]
    with pytest.raises(ValueError, match="must hold strings"):
        text.convert(np.asarray([None], object))
    assert InputSpec("x", "float32", (None,)).convert([1, 2]).dtype == \
        np.float32
    with pytest.raises(ValueError, match="cannot build"):
        _ = InputSpec("c", "complex64", (None,)).kind


def test_default_schema_groups_and_examples_match_the_feature_spec():
    spec = FeatureSpec(max_history=4, max_candidates=3)
    schema = ModelSchema.from_feature_spec(spec)
    assert [(g.count, g.members) for g in schema.groups] == [
        ("hist_length", ("hist_item_ids", "hist_category_ids",
                         "hist_behaviors", "hist_timestamps")),
        ("cand_count", ("cand_item_ids", "cand_category_ids"))]
    f = load_test.random_request(spec, 4, 3, 2, seed=2)
    f["hist_length"][1], f["cand_count"][1] = 2, 1
    ts = f["hist_timestamps"]
    assert (np.diff(ts, axis=1) >= 0).all()
    assert (ts <= f["request_time"][:, None]).all()
    ours = examples_from_schema(f, schema)
    theirs = impression_examples(f, spec)
    assert [len(r) for r in ours] == [3, 1]
    for a_row, b_row in zip(ours, theirs):
        for a, b in zip(a_row, b_row):
            assert tf.train.Example.FromString(a) == \
                tf.train.Example.FromString(b)


def test_request_loading_imports_no_tensorflow():
    code = (
        "import sys\n"
        "import serving.request_loading, serving.model_schema\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow'\n"
        "import serving.grpc_client\n"
        "assert 'hisac_tf.data.input_pipeline' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]


def test_unknown_model_errors_reach_the_caller(exports, tmp_path):
    server, target, _ = serve(exports, tmp_path, "other")
    try:
        with HisacClient(target, model_name="nope", retries=0) as c:
            with pytest.raises(ServingError, match="model 'nope' not found"):
                c.predict({})
    finally:
        server.stop()


def test_fixed_widths_pad_ids_and_require_full_vectors():
    schema = ModelSchema.from_metadata({"serving_default": {"inputs": {
        "user_id": {"dtype": "int64", "shape": [-1]},
        "tags": {"dtype": "string", "shape": [-1, 4]},
        "taste": {"dtype": "float32", "shape": [-1, 2]},
    }}})
    f = request_loading.request_from_dict(
        {"user_id": 1, "tags": ["a", "b"], "taste": [0.5, 1]}, schema)
    assert f["tags"].tolist() == [[b"a", b"b", b"", b""]]
    assert f["taste"].tolist() == [[0.5, 1.0]]
    with pytest.raises(ValueError, match=r"'tags' \(string \[R, 4\]\) "
                       "takes at most 4 values on axis 1, got a list of 5"):
        request_loading.request_from_dict(
            {"user_id": 1, "tags": list("abcde"), "taste": [0, 1]}, schema)
    with pytest.raises(ValueError, match=r"'taste' \(float32 \[R, 2\]\) "
                       "takes exactly 2 values on axis 1, got a list of 1"):
        request_loading.request_from_dict(
            {"user_id": 1, "tags": [], "taste": [0.5]}, schema)
    g = load_test.random_request(schema, 3, 2, 2)
    assert g["tags"].shape == (2, 4) and g["taste"].shape == (2, 2)
