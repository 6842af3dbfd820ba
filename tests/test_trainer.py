"""Training through `fit`: TFRS's train_step with the regularisation
losses, and the metrics' names (`auc_approx` in training)."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.training.trainer import compile_for_training
from tests.test_hisac_ranker import CFG, SPEC, random_batch, random_tables


def fit_one_step(l2: float):
    """(logit kernel before, after, history) of one `fit` step."""
    model = build_model(CFG, SPEC, random_tables())
    if l2:
        # Before the layer is built: Dense.build adds the L2 loss.
        model.logit.kernel_regularizer = tf.keras.regularizers.L2(l2)
    batch = random_batch()
    model(batch)
    before = model.logit.kernel.numpy().copy()
    compile_for_training(model, build_optimizer(CFG, model))
    history = model.fit(
        tf.data.Dataset.from_tensors(batch).repeat(), epochs=1,
        steps_per_epoch=1, verbose=0,
    )
    return before, model.logit.kernel.numpy(), history.history


@pytest.mark.slow
@pytest.mark.parametrize(
    "l2, all_towards_zero",
    [
        pytest.param(0.0, False, id="no-regulariser"),
        pytest.param(1e4, True, id="strong-l2"),
    ],
)
def test_regularisation_loss_reaches_the_gradient(l2, all_towards_zero):
    before, after, history = fit_one_step(l2)
    # With a dominant L2 term every weight of the regularised kernel moves
    # towards zero (Adam's first step follows the gradient's sign); the
    # data gradient alone moves some of them away. A train step that
    # dropped `model.losses` would see the data gradient only.
    towards_zero = np.sign(after - before) == -np.sign(before)
    assert towards_zero.all() == all_towards_zero
    reg = history["regularization_loss"][0]
    expected = l2 * float(np.sum(before ** 2))
    assert reg == pytest.approx(expected, rel=1e-4)
    assert history["total_loss"][0] == pytest.approx(
        history["loss"][0] + reg, rel=1e-5)


@pytest.mark.slow
def test_training_auc_is_named_auc_approx():
    _, _, history = fit_one_step(0.0)
    assert {"auc_approx", "log_loss", "loss"} <= set(history)
    assert "auc" not in history  # the exact AUC is evaluation's name
