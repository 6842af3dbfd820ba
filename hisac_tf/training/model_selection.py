"""Periodic evaluation on the valid split and the best checkpoint by AUC.

`ModelSelection` is the `fit` callback of `training.valid_every` (the
data are split train / valid / test by time: training chooses on valid,
experiments report test). Every `every` steps, and at the run's last
step, it scores the valid files (`data.valid_pattern`) with the same
`predict` and `report` as the evaluation (exact AUC, GAUC, log loss) and:

- writes them, with the agents-per-user diagnostic (`num_active` of
  `compress_user`: mean and histogram), to `<model_dir>/tensorboard/valid`
  at the global step;
- appends the point to the learning curve `<model_dir>/learning_curve.json`
  (valid AUC vs step);
- saves the checkpoint to `<model_dir>/best` when its valid AUC beats
  every earlier point (`best_point`: the highest AUC, the earliest step
  on a tie; NaN never wins).

A resumed run keeps the curve's points up to the step it resumed at
(later ones belong to steps it redoes) and the best so far. The periodic
checkpoints are also written at the validation steps
(`PeriodicCheckpoint.also_every`), so the best checkpoint is never ahead
of the latest one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.split_files import check_shards
from hisac_tf.training import divergence
from hisac_tf.training.callbacks import StepCounter, summary_dir
from hisac_tf.training.checkpoints import best_manager
from hisac_tf.training.evaluation import predict, report, scorer

CURVE_FILE = "learning_curve.json"
METRIC = "auc"  # exact valid AUC chooses the checkpoint


def valid_files(cfg: Config) -> list[str]:
    """The valid split's files; raises when `data.valid_pattern` matches
    none (no silent fallback to another split)."""
    pattern = os.path.join(cfg.data.data_dir, cfg.data.valid_pattern)
    try:
        files = input_pipeline.list_files(pattern)
    except FileNotFoundError as e:
        cause, files = e, []
    else:
        cause = None
    if not files:
        raise FileNotFoundError(
            f"training.valid_every is {cfg.training.valid_every} but "
            f"data.valid_pattern {cfg.data.valid_pattern!r} matches no file "
            f"in data.data_dir {cfg.data.data_dir!r}: write a valid split "
            "or set training.valid_every=0"
        ) from cause
    check_shards(files, cfg.data, "valid")  # empty shards: named errors
    return files


def best_point(points: Sequence[dict]) -> dict | None:
    """The point of the highest valid AUC (earliest on a tie; NaN never
    wins); None when no point has a finite AUC."""
    best = None
    for point in points:
        value = point.get(METRIC)
        if value is None or not math.isfinite(value):
            continue
        if best is None or value > best[METRIC]:
            best = point
    return best


def curve_path(cfg: Config) -> str:
    return os.path.join(cfg.training.model_dir, CURVE_FILE)


def read_curve(cfg: Config) -> dict:
    """The learning curve of `training.model_dir` ({} when none)."""
    path = curve_path(cfg)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


class ModelSelection(tf.keras.callbacks.Callback):
    """Valid evaluation every `training.valid_every` steps; keeps the best.

    Args:
      cfg: the run's config (model_dir, data, valid_every).
      spec: the feature spec the valid records are read with.
      checkpoint: the `tf.train.Checkpoint` of the model (saved as best).
      counter: the run's `StepCounter` (its `start`: the step the run
        resumed at; curve points after it are dropped).
      progress: show a progress bar while scoring.
    """

    def __init__(self, cfg: Config, spec: FeatureSpec,
                 checkpoint: tf.train.Checkpoint, counter: StepCounter,
                 progress: bool = False):
        super().__init__()
        if cfg.training.valid_every < 1:
            raise ValueError(
                "ModelSelection needs training.valid_every >= 1, got "
                f"{cfg.training.valid_every!r}"
            )
        self._supports_tf_logs = True
        self.cfg = cfg
        self.spec = spec
        self.files = valid_files(cfg)
        self.every = int(cfg.training.valid_every)
        self.counter = counter
        self.progress = progress
        self.manager = best_manager(cfg, checkpoint, counter.step)
        self.writer = tf.summary.create_file_writer(
            summary_dir(cfg.training.model_dir, "valid")
        )
        previous = read_curve(cfg)
        self.points = [
            p for p in previous.get("points", [])
            if p["step"] <= counter.start
        ]
        self.best = previous.get("best")
        self.validated_at = self.points[-1]["step"] if self.points else -1
        self.score = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.counter.value
        if step % self.every == 0:
            self.validate(step)

    def on_train_end(self, logs=None):
        step = self.counter.value
        if step != self.validated_at:
            self.validate(step)
        self.writer.close()

    def validate(self, step: int) -> dict:
        """Scores the valid split at `step`; returns the curve point."""
        if self.score is None:
            self.score = scorer(self.model, diagnostics=True)
        p = predict(self.cfg, self.model, self.files, self.spec,
                    progress=self.progress, score=self.score)
        reason = (divergence.collapsed(p.probs)
                  if self.cfg.training.divergence_factor else None)
        if reason:  # Before the point could become the best.
            raise divergence.stop(
                self.cfg.training.model_dir, step, reason,
                hint="lower the learning rates or check the data "
                "(training.divergence_factor=0 turns this check off)")
        point = {"step": int(step),
                 **report(p.users, p.labels, p.probs)}
        active = p.num_active.astype(np.float64)
        point["num_active_mean"] = (
            float(active.mean()) if len(active) else float("nan")
        )
        routing = p.routing or {}  # routing compressors only
        for key, values in routing.items():
            point[key] = float(values.mean()) if len(values) else 0.0
        with self.writer.as_default(step=step):
            for key in ("auc", "gauc", "log_loss", "num_active_mean"):
                tf.summary.scalar(key, point[key])
            for key in routing:
                tf.summary.scalar(f"routing/{key}", point[key])
            if len(active):
                tf.summary.histogram("num_active", active)
        self.writer.flush()
        self.points.append(point)
        self.validated_at = step
        if best_point([q for q in (self.best, point) if q]) is point:
            self.counter.sync()
            path = self.manager.save(checkpoint_number=step)
            self.best = {"step": int(step), METRIC: point[METRIC],
                         "checkpoint": path}
        self.write()
        print(
            f"valid @ step {step}: AUC {point['auc']:.4f}  GAUC "
            f"{point['gauc']:.4f}  log loss {point['log_loss']:.4f}  "
            f"agents/user {point['num_active_mean']:.1f}  (best: step "
            f"{self.best['step'] if self.best else '-'})",
            file=sys.stderr,
        )
        return point

    def write(self) -> None:
        path = curve_path(self.cfg)
        tmp = path + ".tmp"
        json_io.write_json(tmp, {
            "metric": f"valid {METRIC}",
            "valid_pattern": self.cfg.data.valid_pattern,
            "valid_every": self.every,
            "points": self.points,
            "best": self.best,
        })
        tf.io.gfile.rename(tmp, path, overwrite=True)
