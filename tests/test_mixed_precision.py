"""The ranker under the `mixed_bfloat16` Keras policy (on CPU).

Two gaps the GPU script's dry run found: `score_with_state` mixed its
float32 cached state with bfloat16 candidate features, and TFRS's
`train_step` added a bfloat16 loss to a float32 regularisation loss.
"""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export.signatures import ServingModule
from hisac_tf.models.build import build_model, build_optimizer
from tests.test_hisac_ranker import random_batch, random_tables

CFG = config_lib.load_config("tiny")
SPEC = FeatureSpec.from_config(CFG.data)
# bfloat16 keeps 8 bits of mantissa: logits of the tiny ranker agree with
# float32 to a few hundredths.
ATOL = 0.15


@pytest.fixture
def restore_policy():
    """Puts the global Keras policy back, whatever the test did."""
    before = tf.keras.mixed_precision.global_policy()
    yield
    tf.keras.mixed_precision.set_global_policy(before)


def serving_inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("override", [
    pytest.param([], id="two_branch_with_counts"),
    pytest.param(["model.compressor=full", "model.count_slots=0"],
                 id="full_long_only"),
])
def test_mixed_bfloat16_trains_and_serves_close_to_float32(
        restore_policy, override):
    cfg = config_lib.load_config("tiny", override)
    tables = random_tables()
    batch = random_batch()
    reference = build_model(cfg, SPEC, tables)
    want = reference(batch, training=False).numpy()  # float32 [B, C]

    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(cfg, SPEC, tables)
    model(batch, training=False)
    model.set_weights(reference.get_weights())  # float32 variables
    got = model(batch, training=False)
    assert got.dtype == tf.float32  # the logit layer stays float32
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL)

    module = ServingModule(model, SPEC, version=1)
    inputs = serving_inputs(batch)
    request = module.serving_default(inputs)["ctr"].numpy()
    user = {k: inputs[k] for k in module.user_input_names}
    state = module.encode_user(user)
    assert state["user_embedding"].dtype == tf.float32  # the signature's
    cands = {k: inputs[k] for k in
             ("cand_item_ids", "cand_category_ids", "cand_count")}
    cached = module.score_with_state({**state, **cands})["ctr"].numpy()
    assert np.all(np.isfinite(cached))
    np.testing.assert_allclose(cached, request, atol=0.02)
    valid = np.arange(want.shape[1])[None] < batch["cand_count"].numpy()[
        :, None]
    np.testing.assert_allclose(
        cached, np.where(valid, tf.sigmoid(want).numpy(), 0.0), atol=0.04)

    model.compile(optimizer=build_optimizer(cfg, model))
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model(batch, training=False).numpy()
    assert np.all(np.isfinite(after))
