"""A diverged run stops with an error and export refuses it (issue 22,
item 10).

With finite but huge learning rates a run used to end with loss in the
thousands or more, eval AUC 0.5 and every prediction 0.0, and still
write its checkpoints and exit 0. `DivergenceGuard` now stops it when
the loss exceeds `training.divergence_factor` times its early value
(the smallest loss of the first `training.divergence_warmup_steps`
steps of the run from step 0, kept in `<model_dir>/divergence.json`), and
`ModelSelection` when the valid predictions collapse to one value; the
run is marked diverged there, and `hisac-export` refuses it unless
`--force`.
"""

import dataclasses
import glob
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError
from hisac_tf.data import synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export import exporter
from hisac_tf.training import divergence, model_selection
from hisac_tf.training.callbacks import NonFiniteLossError, StepCounter
from hisac_tf.training.checkpoints import checkpoint_manager
from hisac_tf.training.divergence import (
    DivergedRunError,
    DivergenceError,
    DivergenceGuard,
    check_not_diverged,
)
from hisac_tf.training.evaluation import Predictions
from hisac_tf.training.model_selection import ModelSelection
from pipelines import tokenize_items
from pipelines import train as train_job


class _Step:
    def __init__(self, value):
        self.value = value


def run_guard(model_dir, losses, start=0, every=(5,), final=None,
              factor=10.0, warmup=3):
    """Feeds `losses` (steps start+1..) to a guard; returns it."""
    counter = _Step(start)
    guard = DivergenceGuard(counter, str(model_dir), factor, warmup, every,
                            final or start + len(losses), start=start)
    for i, loss in enumerate(losses):
        counter.value = start + i + 1
        guard.on_train_batch_end(i, {"loss": tf.constant(loss)})
    return guard


def test_a_steady_run_passes_and_keeps_its_reference(tmp_path):
    run_guard(tmp_path, [0.7, 0.8, 0.6, 0.5, 4.0, 0.4, 0.5, 0.3, 0.4, 0.5])
    state = json.load(open(tmp_path / "divergence.json"))
    assert state["reference_loss"] == pytest.approx(0.6)
    assert state["reference_steps"] == [1, 3]
    assert "diverged" not in state


def test_a_spike_between_checks_stops_the_run(tmp_path):
    with pytest.raises(DivergenceError, match=(
            r"training stopped at step 5: the loss diverged: its peak over "
            r"steps 1-5 is 100 .* > training.divergence_factor \(10\) x "
            r"its early value 0.6 \(the smallest loss of steps 1-3\)")):
        run_guard(tmp_path, [0.7, 0.8, 0.6, 100.0, 0.5])
    state = json.load(open(tmp_path / "divergence.json"))
    assert state["diverged"]["step"] == 5
    assert "loss diverged" in state["diverged"]["reason"]


def test_a_non_finite_loss_between_checks_stops_the_run(tmp_path):
    with pytest.raises(DivergenceError, match="peak over steps 1-5 is nan"):
        run_guard(tmp_path, [0.7, 0.8, 0.6, math.nan, 0.5])


def test_a_resumed_run_compares_with_the_first_runs_reference(tmp_path):
    run_guard(tmp_path, [0.7, 0.8, 0.6, 0.5, 0.5])
    # Resumed at 5 from a state whose loss is already 50x the reference:
    # its own warm-up would take 30 as normal.
    with pytest.raises(DivergenceError, match="early value 0.6"):
        run_guard(tmp_path, [30.0, 31.0, 29.0, 30.0, 30.0], start=5)


def test_factor_zero_turns_the_guard_off(tmp_path):
    run_guard(tmp_path, [0.7, 0.8, 0.6, 1e9, 1e9], factor=0.0)
    assert not os.path.exists(tmp_path / "divergence.json")


@pytest.mark.parametrize("override, message", [
    ("training.divergence_factor=1", "training.divergence_factor must be 0 "
     r"\(off\) or > 1, got 1.0"),
    ("training.divergence_factor=-2", "training.divergence_factor"),
    ("training.divergence_warmup_steps=0",
     "training.divergence_warmup_steps must be >= 1, got 0"),
])
def test_guard_settings_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load_config("tiny", [override])


def test_export_refuses_a_diverged_run_unless_forced(tmp_path):
    with pytest.raises(DivergenceError):
        run_guard(tmp_path, [0.7, 0.8, 0.6, 100.0, 0.5])
    with pytest.raises(DivergedRunError, match=(
            f"{tmp_path} is from a diverged run .*step 5.*loss diverged.*"
            "pass --force to export it anyway")):
        check_not_diverged(str(tmp_path))
    check_not_diverged(str(tmp_path), force=True)  # warns, returns
    cfg = config_lib.load_config("tiny", [
        f"training.model_dir={tmp_path}",
        f"export.export_dir={tmp_path}/export"])
    with pytest.raises(DivergedRunError):
        exporter.export_model(cfg, progress=False)
    assert glob.glob(str(tmp_path / "export" / "[0-9]*")) == []


# ----------------------------------------------- collapsed valid predictions
def test_collapsed_valid_predictions_stop_the_run(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "data")
    with tf.io.TFRecordWriter(
            str(tmp_path / "data" / "valid-00000-of-00001.tfrecord.gz"),
            "GZIP") as writer:
        writer.write(b"placeholder")
    cfg = config_lib.load_config("tiny", [
        f"data.data_dir={tmp_path}/data",
        f"training.model_dir={tmp_path}/model", "training.valid_every=2"])
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(step=step)
    counter = StepCounter(step, 0)

    def predict(cfg, model, files, spec, progress=True, score=None):
        return Predictions(users=np.array([1, 1, 2, 2]),
                           labels=np.array([0.0, 1.0, 0.0, 1.0]),
                           probs=np.zeros(4, np.float32), truth=np.zeros(0),
                           num_active=np.array([3, 1]))

    monkeypatch.setattr(model_selection, "predict", predict)
    selection = ModelSelection(cfg, FeatureSpec.from_config(cfg.data), ckpt,
                               counter)
    counter.on_train_batch_end(0)
    counter.on_train_batch_end(1)
    with pytest.raises(DivergenceError, match=(
            r"training stopped at step 2: the predictions on the valid split "
            r"collapsed to one value \(0 for all 4 impressions")):
        selection.on_train_batch_end(1)
    assert selection.best is None
    assert not os.path.exists(tmp_path / "model" / "best")
    state = json.load(open(tmp_path / "model" / "divergence.json"))
    assert "collapsed" in state["diverged"]["reason"]


# ---------------------------------------------------------- the tiny preset
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("diverge"))
    cfg = config_lib.load_config("tiny", [
        f"data.data_dir={root}/data", f"tokenizer.output_dir={root}/tok",
        f"training.model_dir={root}/model", "tokenizer.epochs=2",
        f"export.export_dir={root}/export", "training.train_steps=30",
        "training.mode=train"])
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    return cfg


def with_training(cfg, **fields):
    return dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, **fields))


@pytest.mark.slow
def test_learning_rate_1e6_stops_and_export_refuses(tiny):
    cfg = with_training(tiny, dense_learning_rate=1e6,
                        embedding_learning_rate=1e6,
                        model_dir=tiny.training.model_dir + "-1e6")
    with pytest.raises((DivergenceError, NonFiniteLossError)):
        train_job.main(cfg, progress=False)
    model_dir = cfg.training.model_dir
    assert not os.path.exists(os.path.join(model_dir, "train_results.json"))
    state = json.load(open(os.path.join(model_dir, "divergence.json")))
    assert state["diverged"]["step"] <= 30
    with pytest.raises(DivergedRunError, match="diverged run"):
        exporter.export_model(cfg, progress=False)


@pytest.mark.slow
def test_a_finite_divergence_is_stopped_and_its_checkpoints_refused(tiny):
    """Learning rates of 1: the loss goes from 0.7 to ~1e7 and stays
    finite (the run used to end at step 30 with exit 0). Checkpoints of
    the warm-up steps exist; the run stops at the first check after it
    and export refuses the model_dir unless forced."""
    cfg = with_training(tiny, dense_learning_rate=1.0,
                        embedding_learning_rate=1.0, checkpoint_every=2,
                        model_dir=tiny.training.model_dir + "-finite")
    with pytest.raises(DivergenceError, match=(
            "training stopped at step 6: the loss diverged: its peak over "
            r"steps 1-6 is .* > training.divergence_factor \(10\)")):
        train_job.main(cfg, progress=False)
    ckpts = checkpoint_manager(
        cfg, tf.train.Checkpoint(), tf.Variable(0, dtype=tf.int64))
    assert ckpts.latest_checkpoint.endswith("ckpt-4")
    with pytest.raises(DivergedRunError, match="step 6: the loss diverged"):
        exporter.export_model(cfg, progress=False)
    divergence.check_not_diverged(cfg.training.model_dir, force=True)
