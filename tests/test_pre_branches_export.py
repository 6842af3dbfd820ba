"""Exports and checkpoints made before the ranker was made of branches.

`tests/fixtures/pre_branches_export.tar.xz` holds a tiny SavedModel
exported by the ranker of commit 42a2964 (flags in compress_user/score),
the scores it gave for one request, and the same weights as a training
checkpoint (`tests/fixtures/make_pre_branches_export.py` wrote it). The
export must keep serving (it is self-contained), and the checkpoint must
restore into today's ranker (its layers keep their former paths) and give
the same scores.
"""

import os
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.models.build import build_model
from tests.fixtures.make_pre_branches_export import OVERRIDES
from tests.test_hisac_ranker import random_tables

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "fixtures", "pre_branches_export.tar.xz")
ATOL = 1e-5


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre_branches")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(root)
    path = root / "pre_branches_export"
    request = dict(np.load(path / "request.npz"))
    return path, request.pop("ctr"), request


def test_old_export_still_serves_with_savedmodel_load(old):
    path, ctr, request = old
    loaded = tf.saved_model.load(str(path))
    got = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in request.items()})["ctr"].numpy()
    np.testing.assert_allclose(got, ctr, atol=ATOL)
    state_names = set(loaded.signatures["encode_user"].structured_outputs)
    assert {"keys", "short_keys", "count_keys", "user_embedding"} <= (
        state_names)


def test_old_export_still_serves_over_grpc(old, tmp_path):
    from serving import local_server
    from serving.grpc_client import HisacClient

    path, ctr, request = old
    version = tmp_path / "export" / "1"
    shutil.copytree(path, version, ignore=shutil.ignore_patterns(
        "request.npz", "checkpoint"))
    server, port = local_server.start_server(
        str(tmp_path / "export"), poll_s=0)
    try:
        spec = FeatureSpec(max_history=20, max_candidates=6)
        with HisacClient(f"localhost:{port}", spec=spec,
                         timeout_s=30) as client:
            np.testing.assert_allclose(client.predict(request), ctr,
                                       atol=ATOL)
    finally:
        server.stop()


def test_old_checkpoint_restores_into_the_branch_ranker(old):
    path, ctr, request = old
    cfg = config_lib.load_config("tiny", OVERRIDES)
    spec = FeatureSpec.from_config(cfg.data)
    model = build_model(cfg, spec, random_tables(num_items=20, dim=4,
                                                 seed=1))
    features = {k: tf.constant(v) for k, v in request.items()}
    model(features)
    status = tf.train.Checkpoint(model=model).read(
        str(path / "checkpoint" / "ckpt"))
    status.assert_existing_objects_matched()
    probs = tf.sigmoid(model(features)).numpy()
    valid = (np.arange(probs.shape[1])[None, :]
             < request["cand_count"][:, None])
    np.testing.assert_allclose(np.where(valid, probs, 0.0), ctr, atol=ATOL)
    # The cached path of today's ranker agrees with the old export.
    state = model.compress_user(features)
    np.testing.assert_allclose(
        model.score(state, features).numpy(),
        model(features).numpy(), atol=ATOL)
