"""Valid split and best-checkpoint selection (issue 10, item 5).

A hand-made learning curve drives `ModelSelection` (its scores are
replaced by predictions of known AUC): the best checkpoint holds the
model of the best step, a resumed run keeps it, and `select_checkpoint`
(what `evaluate` restores) returns it.
"""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.training import model_selection
from hisac_tf.training.callbacks import StepCounter
from hisac_tf.training.checkpoints import (
    checkpoint_manager,
    select_checkpoint,
)
from hisac_tf.training.evaluation import Predictions
from hisac_tf.training.model_selection import (
    ModelSelection,
    best_point,
    valid_files,
)
from hisac_tf.training.trainer import train

LABELS = np.array([0.0, 0.0, 1.0, 1.0])
# Scores of the four impressions above and their exact AUC.
SCORES = {
    0.5: [0.1, 0.9, 0.2, 0.8],
    0.75: [0.1, 0.8, 0.2, 0.9],
    1.0: [0.1, 0.2, 0.8, 0.9],
}


@pytest.mark.parametrize(
    "aucs, best_step",
    [
        pytest.param([0.6, 0.8, 0.7], 2, id="peak-in-the-middle"),
        pytest.param([0.6, 0.7, 0.8], 3, id="still-rising"),
        pytest.param([0.8, 0.7, 0.8], 1, id="tie-keeps-earliest"),
        pytest.param([math.nan, 0.55, math.nan], 2, id="nan-never-wins"),
        pytest.param([math.nan], None, id="no-finite-point"),
        pytest.param([], None, id="empty"),
    ],
)
def test_best_point_of_a_hand_made_curve(aucs, best_step):
    points = [{"step": i + 1, "auc": a} for i, a in enumerate(aucs)]
    best = best_point(points)
    assert (best and best["step"]) == best_step


def make_cfg(root, **training):
    overrides = [f"data.data_dir={root}/data",
                 f"training.model_dir={root}/model"]
    overrides += [f"training.{k}={json.dumps(v)}"
                  for k, v in training.items()]
    return config_lib.load_config("tiny", overrides)


@pytest.fixture
def run_dir(tmp_path):
    """A data_dir with one valid file (one placeholder record: the scores
    are patched, and empty shards are refused); a model_dir."""
    os.makedirs(tmp_path / "data")
    with tf.io.TFRecordWriter(
            str(tmp_path / "data" / "valid-00000-of-00001.tfrecord.gz"),
            "GZIP") as writer:
        writer.write(b"placeholder")
    return tmp_path


class FakeModel:
    """What ModelSelection needs of a model (its scores are patched)."""


def fake_predict(aucs_by_step, counter):
    def predict(cfg, model, files, spec, progress=True, score=None):
        probs = np.array(SCORES[aucs_by_step[counter.value]])
        return Predictions(users=np.array([1, 1, 2, 2]), labels=LABELS,
                           probs=probs, truth=np.zeros(0),
                           num_active=np.array([3, 1]))
    return predict


def run_selection(cfg, aucs_by_step, start, monkeypatch):
    """Steps start+1.. of a fake run; `weight` holds the step's model."""
    step = tf.Variable(start, dtype=tf.int64)
    weight = tf.Variable(float(start))
    ckpt = tf.train.Checkpoint(step=step, weight=weight)
    manager = checkpoint_manager(cfg, ckpt, step)
    counter = StepCounter(step, start)
    monkeypatch.setattr(model_selection, "predict",
                        fake_predict(aucs_by_step, counter))
    selection = ModelSelection(cfg, FeatureSpec.from_config(cfg.data), ckpt,
                               counter)
    selection.set_model(FakeModel())
    last = max(aucs_by_step)
    for s in range(start + 1, last + 1):
        counter.on_train_batch_end(s - start - 1)
        weight.assign(float(s))
        if s % cfg.training.checkpoint_every == 0:
            manager.save(checkpoint_number=counter.sync())
        selection.on_train_batch_end(s - start - 1)
    manager.save(checkpoint_number=counter.sync())
    selection.on_train_end()
    return selection


def restored_weight(path):
    weight = tf.Variable(-1.0)
    tf.train.Checkpoint(weight=weight).restore(path).expect_partial()
    return float(weight.numpy())


def test_best_checkpoint_follows_the_valid_auc(run_dir, monkeypatch):
    cfg = make_cfg(run_dir, valid_every=2, checkpoint_every=2)
    aucs = {2: 0.75, 4: 1.0, 6: 0.5}
    selection = run_selection(cfg, aucs, 0, monkeypatch)
    assert selection.best["step"] == 4
    curve = json.load(open(run_dir / "model" / "learning_curve.json"))
    assert [p["step"] for p in curve["points"]] == [2, 4, 6]
    assert [p["auc"] for p in curve["points"]] == [0.75, 1.0, 0.5]
    assert curve["points"][0]["num_active_mean"] == 2.0
    assert curve["best"]["step"] == 4
    kind, path = select_checkpoint(cfg)
    assert kind == "best" and path.endswith(os.path.join("best", "ckpt-4"))
    assert restored_weight(path) == 4.0  # the model of step 4
    latest = make_cfg(run_dir, valid_every=2,
                      evaluate_checkpoint="latest")
    kind, path = select_checkpoint(latest)
    assert kind == "latest" and restored_weight(path) == 6.0


def test_resumed_run_keeps_the_best_and_drops_redone_points(
        run_dir, monkeypatch):
    cfg = make_cfg(run_dir, valid_every=2, checkpoint_every=2)
    run_selection(cfg, {2: 0.75, 4: 1.0, 6: 0.5}, 0, monkeypatch)
    # Killed after step 6's point but resumed from step 4's checkpoint:
    # steps 5.. are redone; a tie with step 4 does not replace it, a
    # lower AUC neither.
    again = run_selection(cfg, {6: 1.0, 8: 0.75}, 4, monkeypatch)
    curve = json.load(open(run_dir / "model" / "learning_curve.json"))
    assert [p["step"] for p in curve["points"]] == [2, 4, 6, 8]
    assert [p["auc"] for p in curve["points"]] == [0.75, 1.0, 1.0, 0.75]
    assert again.best["step"] == 4
    assert restored_weight(select_checkpoint(cfg)[1]) == 4.0


def test_a_later_better_point_replaces_the_best(run_dir, monkeypatch):
    cfg = make_cfg(run_dir, valid_every=2, checkpoint_every=2)
    selection = run_selection(cfg, {2: 0.5, 4: 0.75, 5: 1.0}, 0,
                              monkeypatch)
    # Step 5 is the run's last step: validated at the end of the run.
    assert selection.best["step"] == 5
    assert os.listdir(run_dir / "model" / "best").count("ckpt-5.index") == 1
    assert restored_weight(select_checkpoint(cfg)[1]) == 5.0


@pytest.mark.parametrize(
    "choice, message",
    [
        pytest.param("best", "holds no checkpoint", id="best-missing"),
        pytest.param("latest", "train first", id="latest-missing"),
        pytest.param("auto", "train first", id="auto-nothing"),
    ],
)
def test_select_checkpoint_errors_name_the_directory(run_dir, choice,
                                                     message):
    cfg = make_cfg(run_dir, evaluate_checkpoint=choice)
    with pytest.raises(FileNotFoundError, match=message) as e:
        select_checkpoint(cfg)
    assert str(run_dir / "model") in str(e.value)


def test_auto_without_best_takes_latest(run_dir):
    cfg = make_cfg(run_dir)
    step = tf.Variable(3, dtype=tf.int64)
    checkpoint_manager(cfg, tf.train.Checkpoint(step=step), step).save(3)
    kind, path = select_checkpoint(cfg)
    assert kind == "latest" and path.endswith("ckpt-3")


def test_missing_valid_files_are_an_error_naming_pattern_and_dir(tmp_path):
    os.makedirs(tmp_path / "data")
    cfg = make_cfg(tmp_path, valid_every=5)
    with pytest.raises(FileNotFoundError) as e:
        valid_files(cfg)
    assert "valid-*.tfrecord.gz" in str(e.value)
    assert str(tmp_path / "data") in str(e.value)
    # train fails on it before building or training anything.
    with pytest.raises(FileNotFoundError, match="data.valid_pattern"):
        train(cfg, progress=False)
    assert not os.path.exists(tmp_path / "model" / "checkpoints")


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param("training.valid_every=-1", "training.valid_every",
                     id="negative-valid-every"),
        pytest.param('training.evaluate_checkpoint="first"',
                     "training.evaluate_checkpoint", id="unknown-choice"),
    ],
)
def test_config_errors_name_the_field(override, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config("tiny", [override])
