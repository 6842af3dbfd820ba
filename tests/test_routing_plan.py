"""HiSAC's routing off the training step (issue 23): the routing plan
computed apart (`HiSACCompressor.plan`, the `tf.data` map of
hisac_tf/models/routing_plan.py) gives the same logits, loss and
gradients as the model computing it itself; sparse routing
(`model.routing_top_m`) wired through the config."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.compressors.history_compressor import SPARSE_PLAN_KEYS
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.models.build import build_model
from hisac_tf.models.routing_plan import (
    ROUTING_PLAN_KEYS,
    add_routing_plan,
    with_routing_plan,
)
from tests.test_hisac_ranker import random_batch, random_tables

VARIANTS = [
    pytest.param(['model.compressor="hisac"'], id="hisac"),
    pytest.param(['model.compressor="hisac"', "model.routing_top_m=3"],
                 id="hisac_sparse3"),
    pytest.param(['model.compressor="hisac_no_voting"',
                  "model.routing_top_m=5"], id="no_voting_sparse5"),
    pytest.param(['model.compressor="hisac_hard"'], id="hisac_hard"),
]


def _model(override):
    cfg = config_lib.load_config("tiny", list(override))
    return cfg, build_model(cfg, FeatureSpec.from_config(cfg.data),
                            random_tables())


@pytest.mark.parametrize("override", VARIANTS)
def test_plan_gives_same_logits_loss_and_gradients(override):
    _, model = _model(override)
    batch = random_batch()
    planned = add_routing_plan(model)(batch)
    assert set(ROUTING_PLAN_KEYS) - set(planned) <= set(SPARSE_PLAN_KEYS)
    sparse = model.compressor.routing_top_m > 0
    assert ("routing_index" in planned) == sparse
    np.testing.assert_allclose(model(planned), model(batch), atol=1e-5)
    grads = []
    for features in (batch, planned):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(features, training=True)
        grads.append([tf.convert_to_tensor(g) for g in tape.gradient(
            loss, model.trainable_variables) if g is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sparse_state_and_request_paths_agree():
    _, model = _model(["model.routing_top_m=2"])
    batch = random_batch()
    state = model.compress_user(batch)
    np.testing.assert_allclose(model(batch), model.score(state, batch),
                               atol=1e-6)
    assert np.isfinite(model(batch).numpy()).all()


def test_sparse_m_at_least_n_is_dense():
    _, dense = _model([])
    _, sparse = _model(["model.routing_top_m=20"])  # N = 20
    batch = random_batch()
    dense(batch), sparse(batch)  # build
    sparse.set_weights(dense.get_weights())
    np.testing.assert_array_equal(sparse(batch), dense(batch))


def test_dataset_map_adds_the_plan():
    _, model = _model(["model.routing_top_m=3"])
    batch = random_batch()
    ds = with_routing_plan(tf.data.Dataset.from_tensors(batch), model)
    got = next(iter(ds))
    assert got["routing_index"].shape == (3, 4, 3)  # [B, A, m]
    np.testing.assert_allclose(model(got), model(batch), atol=1e-5)


def test_training_graph_with_plan_has_no_routing_or_voting():
    """With the plan the step holds no top-k or sort (voting's and the
    sparse selection's op): only the aggregation is left in it."""
    _, model = _model(["model.routing_top_m=3", "model.count_slots=0",
                       "model.short_term_length=0"])
    batch = random_batch()
    planned = add_routing_plan(model)(batch)

    def op_types(features):
        fn = tf.function(lambda f: model.compute_loss(f, training=True))
        graph = fn.get_concrete_function(features).graph
        return {op.type for op in graph.get_operations()}

    assert "TopKV2" in op_types(batch)
    assert "TopKV2" not in op_types(planned)


def test_plan_errors_are_named():
    _, model = _model(["model.routing_top_m=3"])
    batch = random_batch()
    planned = add_routing_plan(model)(batch)
    del planned["routing_agent_mask"]
    with pytest.raises(ValueError, match="routing_agent_mask"):
        model(planned)
    _, full = _model(['model.compressor="full"'])
    with pytest.raises(ValueError, match="HiSAC"):
        add_routing_plan(full)
    with pytest.raises(ValueError, match="routing_plan"):
        full.compressor(tf.zeros([1, 2, 8]), tf.ones([1, 2], tf.bool),
                        routing_plan={"routing_weights": tf.zeros([1])})


@pytest.mark.parametrize("override,field", [
    (["model.routing_top_m=-1"], "routing_top_m"),
    (['model.compressor="kmeans"', "model.routing_top_m=4"],
     "routing_top_m"),
    (['model.compressor="hisac_hard"', "model.routing_top_m=4"],
     "routing_top_m"),
    (['model.compressor="full"', "training.routing_in_input_pipeline=true"],
     "routing_in_input_pipeline"),
    (["training.routing_in_input_pipeline=true",
      'cluster.strategy="mirrored"'], "routing_in_input_pipeline"),
])
def test_config_errors(override, field):
    with pytest.raises(ConfigError, match=field):
        config_lib.load_config("tiny", override)
