"""A diverged run stops with a clear error and writes no checkpoint.

Issue 12, item 11: training with NaN learning rates used to run every
step with `loss: nan`, exit 0, write NaN checkpoints and a
`train_results.json` holding a bare `NaN`.
"""

import dataclasses
import glob
import math
import os

import pytest

from hisac_tf import config as config_lib
from hisac_tf.data import synthetic
from hisac_tf.training.callbacks import (
    NonFiniteLossError,
    NonFiniteLossGuard,
)
from pipelines import tokenize_items
from pipelines import train as train_job


class _Step:
    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize("step, logs, raises", [
    pytest.param(4, {"loss": math.nan}, True, id="nan-at-a-log-step"),
    pytest.param(4, {"loss": 1.0, "total_loss": math.inf}, True,
                 id="inf-total-loss"),
    pytest.param(3, {"loss": math.nan}, False, id="not-checked-off-step"),
    pytest.param(7, {"loss": math.nan}, True, id="final-step"),
    pytest.param(4, {"loss": 0.5, "auc_approx": math.nan}, False,
                 id="nan-metric-is-not-the-loss"),
])
def test_guard_checks_the_loss_at_writing_steps(step, logs, raises):
    guard = NonFiniteLossGuard(_Step(step), (2, 0), final_step=7,
                               hint="lower the learning rate")
    if raises:
        with pytest.raises(NonFiniteLossError,
                           match=f"stopped at step {step}: the loss is not "
                           r"finite .*last checkpoint: none\); lower"):
            guard.on_train_batch_end(step - 1, logs)
    else:
        guard.on_train_batch_end(step - 1, logs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("nan"))
    cfg = config_lib.load_config("tiny", [
        f"data.data_dir={root}/data", f"tokenizer.output_dir={root}/tok",
        f"training.model_dir={root}/model", "tokenizer.epochs=2",
        "training.train_steps=12", "training.checkpoint_every=3",
        "training.log_every=3", "training.mode=train"])
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    return cfg


def with_training(cfg, **fields):
    """`cfg` with training fields set past validation (as a caller that
    builds configs in code could)."""
    return dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, **fields))


@pytest.mark.slow
def test_nan_learning_rate_is_a_config_error(tiny):
    cfg = with_training(tiny, dense_learning_rate=math.nan)
    with pytest.raises(config_lib.ConfigError,
                       match="training.dense_learning_rate must be a finite "
                       "number, got nan"):
        train_job.main(cfg, progress=False)


@pytest.mark.slow
def test_diverging_learning_rate_stops_training_without_checkpoint(tiny):
    cfg = with_training(tiny, dense_learning_rate=1e38,
                        embedding_learning_rate=1e38)
    with pytest.raises(NonFiniteLossError) as e:
        train_job.main(cfg, progress=False)
    assert "stopped at step 3: the loss is not finite (loss=" in str(e.value)
    assert "training.dense_learning_rate (1e+38)" in str(e.value)
    # The guard runs before PeriodicCheckpoint: step 3's save never came.
    model_dir = cfg.training.model_dir
    assert glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*")) == []
    assert not os.path.exists(os.path.join(model_dir, "train_results.json"))
