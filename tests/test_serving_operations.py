"""Starting, exporting and reloading without silent surprises (issue 22,
items 5-8): a port in use is refused, two concurrent exports keep both
versions in models.config, a models.config naming a missing version keeps
the loaded ones, and bad ports, export dirs, version names and TLS files
are named at start. Serves the toy SavedModels of test_grpc_serving."""

import logging
import os
import shutil
import subprocess
import sys
import threading
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from hisac_tf.export import exporter, tf_serving_config, verification
from pipelines import serve
from serving import local_server, version_manager
from serving.grpc_client import HisacClient
from tests.test_grpc_serving import (
    ROOT,
    SPEC,
    make_request,
    publish,
    reference_ctr,
    store,  # noqa: F401  (module fixture: the toy versions)
)


# ------------------------------------------------- 5. one server per port
def test_a_port_in_use_is_refused(store, tmp_path):  # noqa: F811
    publish(store, str(tmp_path), 1)
    first, port = local_server.start_server(str(tmp_path), poll_s=0)
    try:
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"
                           ".*in use"):
            local_server.start_server(str(tmp_path), port, poll_s=0)
        # Asked for: SO_REUSEPORT on both lets a second one share it.
        shared, _ = local_server.start_server(
            str(tmp_path), 0, poll_s=0, reuse_port=True)
        shared.stop()
        f = make_request()
        with HisacClient(first.target, spec=SPEC, retries=0,
                         timeout_s=20) as c:
            np.testing.assert_allclose(c.predict(f), reference_ctr(f, 1),
                                       rtol=1e-5)
    finally:
        first.stop()


# ------------------------------------- 6. concurrent exports, one config
def test_racing_exports_keep_both_versions_in_models_config(
        tmp_path, monkeypatch):
    """Two publishes of versions 1 and 2 that both start before either
    has renamed its version (a barrier inside the write): the config
    written last must still list both (before: only its own)."""
    export_dir = str(tmp_path / "export")
    cfg = types.SimpleNamespace(export=types.SimpleNamespace(
        export_dir=export_dir, model_name="hisac"))
    both_writing = threading.Barrier(2, timeout=60)

    def write_export(module, path, cfg, cases, summary):
        os.makedirs(os.path.join(path, "assets.extra"))
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"toy")
        both_writing.wait()

    monkeypatch.setattr(exporter, "write_export", write_export)
    monkeypatch.setattr(verification, "verify", lambda *a: None)
    monkeypatch.setattr(verification, "graph_ops", lambda path: [])
    monkeypatch.setattr(exporter, "signature_summary", lambda m: {})
    errors = []

    def export(version):
        module = types.SimpleNamespace(
            export_version=tf.constant(version, tf.int64),
            spec=types.SimpleNamespace(max_history=8), fingerprint=version)
        try:
            exporter.publish(cfg, module, [])
        except Exception as e:  # Reported below.
            errors.append(e)

    threads = [threading.Thread(target=export, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert exporter.existing_versions(export_dir) == [1, 2]
    config = tf_serving_config.read(
        os.path.join(export_dir, tf_serving_config.MODELS_CONFIG))
    (entry,) = config.model_config_list.config
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}


def test_models_config_update_keeps_other_labels_and_models(tmp_path):
    d = str(tmp_path)
    for v in (1, 2, 3):
        os.makedirs(os.path.join(d, str(v)))
    path = os.path.join(d, tf_serving_config.MODELS_CONFIG)
    old = tf_serving_config.model_server_config("hisac", d, [1, 2])
    old.model_config_list.config[0].version_labels["shadow"] = 1
    old.model_config_list.config[0].version_labels["gone"] = 9
    other = tf_serving_config.model_server_config("other", "/x", [5])
    old.model_config_list.config.add().CopyFrom(
        other.model_config_list.config[0])
    tf_serving_config.write_texts(d, {
        tf_serving_config.MODELS_CONFIG: tf_serving_config.to_text(old)})
    exporter.update_models_config(d, "hisac")
    new = tf_serving_config.read(path)
    mine, theirs = new.model_config_list.config
    assert dict(mine.version_labels) == {"stable": 2, "canary": 3,
                                         "shadow": 1}
    assert list(mine.model_version_policy.specific.versions) == [1, 2, 3]
    assert theirs.name == "other"


# ------------------------------------- 7. a config naming a missing version
def test_config_naming_a_missing_version_keeps_serving(
        store, tmp_path, caplog):  # noqa: F811
    publish(store, str(tmp_path), 1)
    config = tmp_path / "models.config"
    registry = version_manager.ModelRegistry(str(tmp_path))
    assert registry.refresh() == [1]
    config.write_text(tf_serving_config.to_text(
        tf_serving_config.model_server_config("hisac", str(tmp_path), [4])))
    with caplog.at_level(logging.WARNING):
        assert registry.refresh() == [1]  # before: [] (all UNAVAILABLE)
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING]
    assert any("version(s) [4], not found" in m for m in warned), warned
    spec = types.SimpleNamespace(name="hisac", WhichOneof=lambda _: None)
    assert registry.select(spec).version == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        registry.refresh()  # Warned once, not at every poll.
    assert not [r for r in caplog.records if "not found" in r.getMessage()]
    publish(store, str(tmp_path), 4 - 1)  # version 3 ...
    os.rename(tmp_path / "3", tmp_path / "4")  # ... arrives as 4
    assert registry.refresh() == [4]  # Then the config's policy holds.


# ------------------------------------------------ 8. startup, operations
def test_server_port_is_validated():
    parser = serve.FLAGS["server_port"].parser
    for bad in ("99999", "0", "-1"):
        with pytest.raises(ValueError):
            parser.parse(bad)
    assert parser.parse("8500") == 8500
    with pytest.raises(ValueError, match="port must be an int in "
                       r"0..65535 \(0: any free\), got 99999"):
        local_server.start_server("/nonexistent", 99999)


def test_serve_refuses_a_missing_export_dir(tmp_path):
    missing = tmp_path / "no_export"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.serve",
         f"--server_export_dir={missing}", "--server_port=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert (f"--server_export_dir: no export directory '{missing}'"
            in out.stderr)
    assert "--wait_for_export" in out.stderr
    assert isinstance(serve.FLAGS["wait_for_export"], flags.Flag)


def test_version_dir_with_leading_zeros_is_refused(
        store, tmp_path, caplog):  # noqa: F811
    shutil.copytree(os.path.join(store, "2"), tmp_path / "0004")
    publish(store, str(tmp_path), 1)
    registry = version_manager.ModelRegistry(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert registry.refresh() == [1]  # before: 4, loaded from .../4/
    assert any("0004: a version directory must be named by its number"
               in r.getMessage() for r in caplog.records)
    assert [s[0] for s in registry.statuses()] == [1]


def test_a_bad_tls_pem_names_the_file(tmp_path):
    from tests.test_serving_hardening import _self_signed

    cert, key = _self_signed(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(ValueError, match=f"tls_cert {junk}: not a PEM "
                       "certificate"):
        local_server.server_credentials(str(junk), key)
    with pytest.raises(ValueError, match=f"tls_key {junk}: not a PEM "
                       "private key of the certificate"):
        local_server.server_credentials(cert, str(junk))
    with pytest.raises(ValueError, match=f"tls_client_ca {junk}"):
        local_server.server_credentials(cert, key, str(junk))
    assert isinstance(local_server.server_credentials(cert, key),
                      grpc.ServerCredentials)


def test_score_names_a_truncated_json_request(tmp_path):
    path = tmp_path / "request.json"
    path.write_text('{"user_id": 3, "hist_item_ids": [4, 5')
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.score",
         "--client_target=localhost:1", f"--client_request={path}",
         "--client_wait_s=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"--client_request {path}: not valid JSON" in out.stderr
