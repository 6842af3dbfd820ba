"""Serving under hostile or careless use (issue: hardening).

The toy SavedModels of `tests/test_grpc_serving.py` (four signatures, the
export's input names, a `max_history` of N = 8): requests whose declared
shapes would make the server allocate gigabytes, the admission limit and
the shedding of calls nobody waits for, a version copied in
non-atomically, undecodable examples, non-finite scores, loopback by
default and TLS.
"""

import os
import shutil
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.testing.declared_tensor import declared
from pipelines import serve
from serving import (
    load_test,
    local_server,
    model_version,
    prediction_handlers,
    request_limits,
    version_manager,
)
from serving.grpc_client import HisacClient, ServingError
from serving.request_limits import RequestLimits
from tests.test_grpc_serving import (
    SPEC,
    make_request,
    publish,
    reference_ctr,
    store,  # noqa: F401  (module fixture: the toy versions)
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
HISTORY = ("hist_item_ids", "hist_category_ids", "hist_behaviors",
           "hist_timestamps")


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):  # noqa: F811
    export = tmp_path_factory.mktemp("export")
    publish(store, str(export), 1)
    srv, port = local_server.start_server(
        str(export), poll_s=0, limits=RequestLimits(
            max_candidates=64, max_requests=100,
            max_request_bytes=8 << 20))
    yield srv, f"localhost:{port}"
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with HisacClient(server[1], spec=SPEC, timeout_s=20, retries=0) as c:
        yield c


# ------------------------------------------------ 1. memory amplification
def amplified(width):
    f = make_request(r=1)
    inputs = dict(f)
    for name in HISTORY:
        inputs[name] = declared([1, width])
    return inputs


@pytest.mark.parametrize("edit, code, text", [
    (lambda f: amplified(2_000_000), INVALID,
     r"'hist_behaviors' declares shape \[1, 2000000\]: history width "
     r"N' = 2000000, more than max_history_multiple x N = 4 x 8 = 32"),
    (lambda f: {**f, "cand_item_ids": declared([3, 5000]),
                "cand_category_ids": declared([3, 5000])}, INVALID,
     r"'cand_category_ids' declares shape \[3, 5000\]: C = 5000 "
     r"candidates, more than max_candidates = 64"),
    (lambda f: {**f, "user_id": declared([10_000_000])}, INVALID,
     r"'user_id' declares shape \[10000000\]: R = 10000000 requests, "
     r"more than max_requests = 100"),
], ids=["history_width_20M_from_746_bytes", "candidates_past_limit",
        "requests_past_limit"])
def test_declared_shapes_are_bounded_before_materialising(
        client, edit, code, text):
    with pytest.raises(ServingError, match=text) as e:
        client.run("serving_default", edit(make_request()))
    assert e.value.code == code
    f = make_request()
    np.testing.assert_allclose(client.predict(f), reference_ctr(f, 1),
                               rtol=1e-5)


def test_state_past_the_byte_budget_is_resource_exhausted(client):
    user, cands = make_request(), make_request()
    state = client.encode_user({k: v for k, v in user.items()
                                if not k.startswith("cand_")})
    inputs = {**state, **{k: cands[k] for k in (
        "cand_item_ids", "cand_category_ids", "cand_count")}}
    inputs["keys"] = declared([3, 64, 128, 128], tf.float32, 0.5)  # 12 MiB
    with pytest.raises(ServingError, match=r"'keys' declares shape "
                       r"\[3, 64, 128, 128\]: 12582912 bytes once "
                       r"materialised.*max_request_bytes = 8388608") as e:
        client.run("score_with_state", inputs)
    assert e.value.code == EXHAUSTED


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="max_candidates must be an int "
                       ">= 1, got 0"):
        RequestLimits(max_candidates=0)
    proto = declared([2, 3], tf.float32)
    assert request_limits.declared_bytes(proto) == 24


# --------------------------------- 3. a non-finite score is never OK
def test_non_finite_score_is_not_answered(client):
    f = make_request()
    user = {k: v for k, v in f.items() if not k.startswith("cand_")}
    state = client.encode_user(user)
    state["keys"][1, 0, 0, 0] = np.nan  # The toy scores from keys[:, 0, 0, 0].
    cands = {k: f[k] for k in ("cand_item_ids", "cand_category_ids",
                               "cand_count")}
    with pytest.raises(ServingError, match=r"output 'ctr' of signature "
                       r"'score_with_state' holds a non-finite value") as e:
        client.score_with_state(state, cands)
    assert e.value.code == grpc.StatusCode.INTERNAL


# ---------------------------------------- 6. examples that do not parse
def test_undecodable_example_names_input_and_index(client):
    f = make_request(r=1)
    good = client.spec.impression_example(
        {k: (v[0][:f["hist_length"][0]] if v.ndim == 2 else v[0])
         for k, v in f.items()}, 0).SerializeToString()
    with pytest.raises(ServingError, match=r"input 'examples': entry 1 "
                       r"cannot be parsed") as e:
        client.predict_examples([good, b"\xff" * 100])
    assert e.value.code == INVALID
    assert client.predict_examples([good]).shape == (1,)


# ---------------------------------------------------- 4. load shedding
@pytest.fixture
def gated(store, tmp_path, monkeypatch):  # noqa: F811
    """One worker thread, admission limit 2, and run_predict gated: it
    blocks until `gate` is set and counts its calls."""
    publish(store, str(tmp_path), 1)
    gate, entered, calls = threading.Event(), threading.Event(), []
    real = prediction_handlers.run_predict

    def slow(*args, **kwargs):
        calls.append(time.monotonic())
        entered.set()
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(prediction_handlers, "run_predict", slow)
    srv, port = local_server.start_server(
        str(tmp_path), poll_s=0, max_workers=1, max_concurrent_rpcs=2)
    yield srv, f"localhost:{port}", gate, entered, calls
    gate.set()
    srv.stop()


def test_overload_is_refused_and_abandoned_calls_are_not_run(gated):
    _, target, gate, entered, calls = gated
    f = make_request()
    with HisacClient(target, spec=SPEC, retries=0, timeout_s=30) as c:
        request = c.predict_request(f)
        first = c.prediction.Predict.future(request, timeout=30)
        assert entered.wait(30)  # The only worker is busy with it.
        # Queued behind it, with a deadline that passes while it waits.
        second = c.prediction.Predict.future(request, timeout=0.5)
        time.sleep(0.1)
        # Admission limit 2 reached: refused at once, not queued.
        with pytest.raises(grpc.RpcError) as e:
            c.prediction.Predict(request, timeout=30)
        assert e.value.code() == EXHAUSTED
        with pytest.raises(grpc.RpcError) as e:
            second.result()
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.set()
        first.result()
        np.testing.assert_allclose(c.predict(f), reference_ctr(f, 1),
                                   rtol=1e-5)
    assert len(calls) == 2  # The first and the last: never the abandoned.


# --------------------------------- 5. a version copied non-atomically
def test_version_copied_in_two_steps_loads_once_complete(
        store, tmp_path):  # noqa: F811
    source = os.path.join(store, "1")
    target = tmp_path / "1"
    target.mkdir()
    shutil.copy(os.path.join(source, "saved_model.pb"), target)
    registry = version_manager.ModelRegistry(str(tmp_path), retry_s=3600)
    assert registry.refresh() == []
    (state,) = registry.statuses()
    assert state[0] == 1 and state[3]  # END, with the error.
    shutil.copytree(os.path.join(source, "variables"), target / "variables")
    shutil.copytree(os.path.join(source, "assets.extra"),
                    target / "assets.extra")
    assert registry.refresh() == [1]
    assert [s[2] for s in registry.statuses()] == [0]


def test_unchanged_failed_version_backs_off(tmp_path, monkeypatch):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"broken")
    tries = []

    def failing(path, version):
        tries.append(version)
        raise ValueError("cannot parse")

    monkeypatch.setattr(version_manager, "load_version", failing)
    registry = version_manager.ModelRegistry(str(tmp_path), retry_s=0.2)
    registry.refresh()
    registry.refresh()
    assert tries == [1]  # Unchanged, within the backoff: not retried.
    time.sleep(0.3)
    registry.refresh()
    assert tries == [1, 1]  # Backoff over: tried again.
    assert "cannot parse" in registry.statuses()[0][3]


# ------------------------------------------------ 2. exposure and TLS
def test_serve_binds_loopback_by_default():
    assert serve.FLAGS["server_host"].default == "127.0.0.1"


def _self_signed(folder):
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-keyout", key,
         "-out", cert, "-addext", "subjectAltName=DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual_tls"])
def test_tls_on_loopback(store, tmp_path, mutual):  # noqa: F811
    cert, key = _self_signed(tmp_path)
    export = tmp_path / "export"
    export.mkdir()
    publish(store, str(export), 1)
    srv, port = local_server.start_server(
        str(export), poll_s=0, tls_cert=cert, tls_key=key,
        tls_client_ca=cert if mutual else None)
    target = f"localhost:{port}"
    f = make_request()
    try:
        client_cert = {"tls_cert": cert, "tls_key": key} if mutual else {}
        with HisacClient(target, spec=SPEC, tls_ca=cert, retries=0,
                         timeout_s=20, **client_cert) as c:
            np.testing.assert_allclose(c.predict(f), reference_ctr(f, 1),
                                       rtol=1e-5)
        with HisacClient(target, spec=SPEC, retries=0, timeout_s=5) as c:
            with pytest.raises(ServingError) as e:  # Plaintext refused.
                c.predict(f)
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
        if mutual:
            with HisacClient(target, spec=SPEC, tls_ca=cert, retries=0,
                             timeout_s=5) as c:
                with pytest.raises(ServingError) as e:  # No client cert.
                    c.predict(f)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


def test_tls_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match="tls_cert and tls_key together"):
        local_server.server_credentials("cert.pem", None)
    with pytest.raises(FileNotFoundError, match="tls_cert: no such file"):
        local_server.server_credentials(str(tmp_path / "no.pem"),
                                        str(tmp_path / "no.key"))
    with pytest.raises(ValueError, match="needs tls_ca"):
        HisacClient("localhost:1", tls_cert="c.pem", tls_key="k.pem")


def test_model_version_reads_the_exported_n(store):  # noqa: F811
    loaded = model_version.load_version(os.path.join(store, "1"), 1)
    assert loaded.max_history == 8


def test_overload_test_reports_goodput(server):
    f = make_request()
    report = load_test.run_overload_test(
        server[1], f, rate_qps=20, duration_s=0.5, deadline_s=5.0,
        spec=SPEC, channels=2)
    assert report["calls"] == 10
    assert sum(report["codes"].values()) == 10
    assert report["goodput_qps"] == report["ok"] / 0.5
    assert report["probe_code"] == "OK"
    with pytest.raises(ValueError, match="rate_qps"):
        load_test.run_overload_test(server[1], f, rate_qps=0)
